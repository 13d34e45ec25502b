package events

import (
	"fmt"
	"strings"
)

// Sources of the services, as CloudEvents source URI-references.
const (
	SourcePlanner    = "/flotilla/planner"
	SourceDispatcher = "/flotilla/dispatcher"
	SourceGate       = "/flotilla/gate"
)

// SourceAgent is the source of a cluster's agent.
func SourceAgent(cluster string) string { return "/flotilla/cluster-agent/" + cluster }

// StepEventID is deterministic for one transition of one step of one
// release, so a planner that crashes after publishing and republishes
// produces a duplicate that JetStream drops (Nats-Msg-Id).
func StepEventID(ref AppRef, step, eventType string) string {
	return fmt.Sprintf("%s.%s.%s", RunID(ref), step, Verb(eventType))
}

// DispatchID is deterministic for the dispatch of one step of one run.
func DispatchID(ref AppRef, step string) string {
	return fmt.Sprintf("%s.%s.dispatched", RunID(ref), step)
}

// WorkID is deterministic for one step's work for one cluster.
func WorkID(ref AppRef, step, cluster string) string {
	return fmt.Sprintf("%s.%s.%s.work", RunID(ref), step, cluster)
}

// RunID names one run of one release: a restarted workflow (attempt > 0)
// publishes anew instead of being dropped as a duplicate.
func RunID(ref AppRef) string {
	if ref.Attempt > 0 {
		return fmt.Sprintf("%s.v%d.r%d", ref.UID, ref.Revision, ref.Attempt)
	}
	return fmt.Sprintf("%s.v%d", ref.UID, ref.Revision)
}

// Verb is the <verb> of dev.flotilla.<noun>.<verb>.v1 ("started", ...).
func Verb(eventType string) string {
	parts := strings.Split(eventType, ".")
	if len(parts) >= 2 {
		return parts[len(parts)-2]
	}
	return eventType
}
