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
func StepEventID(appUID string, revision int64, step, eventType string) string {
	return fmt.Sprintf("%s.v%d.%s.%s", appUID, revision, step, verb(eventType))
}

// DispatchID is deterministic for the dispatch of one step of one release.
func DispatchID(appUID string, revision int64, step string) string {
	return fmt.Sprintf("%s.v%d.%s.dispatched", appUID, revision, step)
}

// verb is the <verb> of dev.flotilla.<noun>.<verb>.v1.
func verb(eventType string) string {
	parts := strings.Split(eventType, ".")
	if len(parts) >= 2 {
		return parts[len(parts)-2]
	}
	return eventType
}
