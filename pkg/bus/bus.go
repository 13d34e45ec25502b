// Package bus owns Flotilla's use of NATS JetStream: the streams, KV buckets
// and object store of the design (set up idempotently), the subjects, and
// publish and consume with ack, nak-with-delay and terminate-with-reason.
// Events themselves are built and read by package events only.
package bus

import (
	"strings"
)

// Stream names. Each stream has one writer (or one kind of writer), so
// that no less-trusted writer (an agent, a bot) shares a stream, and so a
// duplicate window, with a service's own events: a forged message ID can
// pre-empt nothing it does not write itself.
const (
	StreamSteps     = "FLOTILLA_STEPS"     // planner
	StreamWork      = "FLOTILLA_WORK"      // dispatcher
	StreamDispatch  = "FLOTILLA_DISPATCH"  // dispatcher
	StreamStatus    = "FLOTILLA_STATUS"    // each cluster's agent, on its own subjects
	StreamClusters  = "FLOTILLA_CLUSTERS"  // each cluster's agent, on its own subjects
	StreamApprovals = "FLOTILLA_APPROVALS" // bots (and the CLI's webhook peers)
	StreamGate      = "FLOTILLA_GATE"      // gate
	StreamBundles   = "FLOTILLA_BUNDLES"   // status bundles carried from sites, imported by an operator
)

// KV buckets and the object store.
const (
	BucketRuns      = "flotilla-runs"
	BucketClusters  = "flotilla-clusters"
	BucketGate      = "flotilla-gate"
	ObjectSnapshots = "flotilla-snapshots"
)

// Durable consumer names of the hub's services, shared by their replicas
// (an agent's is AgentConsumer).
const (
	ConsumerPlanner    = "planner"
	ConsumerDispatcher = "dispatcher"
	ConsumerGate       = "gate"
)

// Subject prefixes; see the Subject functions for the full shape.
const (
	prefixSteps     = "flotilla.steps"
	prefixWork      = "flotilla.work"
	prefixStatus    = "flotilla.status"
	prefixDispatch  = "flotilla.dispatch"
	prefixApprovals = "flotilla.approvals"
	prefixGate      = "flotilla.gate"
	prefixClusters  = "flotilla.clusters"
	prefixQuery     = "flotilla.query"
	prefixBundles   = "flotilla.bundles"
)

// token makes a Kubernetes name one subject token: names may hold dots,
// which NATS reads as separators; '_' never occurs in a Kubernetes name, so
// the mapping is reversible.
func token(name string) string { return strings.ReplaceAll(name, ".", "_") }

// StepSubject is where the planner publishes an application's step events.
func StepSubject(ns, app string) string { return join(prefixSteps, ns, app) }

// WorkSubject is where the dispatcher publishes one cluster's desired state
// of one application. The work stream keeps only the last message of each.
func WorkSubject(cluster, ns, app string) string { return join(prefixWork, cluster, ns, app) }

// WorkAppFilter matches one application's work in every cluster.
func WorkAppFilter(ns, app string) string { return prefixWork + ".*." + token(ns) + "." + token(app) }

// WorkCluster is the cluster a work subject is for.
func WorkCluster(subject string) string {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// StatusAll matches every cluster's reports; ClustersAll every join and heartbeat.
const (
	StatusAll   = prefixStatus + ".>"
	ClustersAll = prefixClusters + ".>"
)

// StatusFilter matches every report of one cluster.
func StatusFilter(cluster string) string { return prefixStatus + "." + token(cluster) + ".>" }

// ReportLane is the durable consumer, named from a service's consumer
// name, that reads one cluster's reports.
func ReportLane(consumer, cluster string) string { return consumer + "-" + token(cluster) }

// WorkAll matches every cluster's work.
const WorkAll = prefixWork + ".>"

// KVAll matches every key of a bucket, as its stream's subjects.
func KVAll(bucket string) string { return "$KV." + bucket + ".>" }

// WorkFilter matches every work subject of one cluster.
func WorkFilter(cluster string) string { return prefixWork + "." + token(cluster) + ".>" }

// StatusSubject is where a cluster's agent reports on an application.
func StatusSubject(cluster, ns, app string) string { return join(prefixStatus, cluster, ns, app) }

// DispatchSubject is where the dispatcher tells the planner which clusters a
// step went to, or why it went to none.
func DispatchSubject(ns, app string) string { return join(prefixDispatch, ns, app) }

// ApprovalSubject is where bots, the CLI and the HTTP hook send approvals.
func ApprovalSubject(ns, app string) string { return join(prefixApprovals, ns, app) }

// ApprovalsFilter matches every approval sent to the gate.
const ApprovalsFilter = prefixApprovals + ".>"

// QuerySubject is where a cluster's agent answers live queries (core NATS
// request/reply, not a stream).
func QuerySubject(cluster string) string { return join(prefixQuery, cluster) }

// QueryFilter matches every cluster's query subject.
const QueryFilter = prefixQuery + ".>"

// GateSubject is where the gate publishes: kind "requested" (for bots),
// "decisions" (for the planner) or "audit".
func GateSubject(kind, ns, app string) string { return join(prefixGate+"."+kind, ns, app) }

// GateDecisionsFilter matches every decision the gate sends the planner.
const GateDecisionsFilter = prefixGate + ".decisions.>"

// StreamOf names the stream that holds subject ("" for none).
func StreamOf(subject string) string {
	for _, s := range Streams(SetupOptions{}) {
		for _, pattern := range s.Subjects {
			if subjectMatches(pattern, subject) {
				return s.Name
			}
		}
	}
	return ""
}

// SubjectMatches reports whether a NATS subject matches a pattern with
// "*" (one token) and a final ">" (one or more tokens).
func SubjectMatches(pattern, subject string) bool { return subjectMatches(pattern, subject) }

func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return i < len(s)
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// ClusterSubject is where an agent sends its join request or heartbeats
// (kind "join" or "heartbeat").
func ClusterSubject(cluster, kind string) string { return join(prefixClusters, cluster, kind) }

// AcceptedKey is the clusters-bucket key holding "true" while the hub
// accepts the cluster; its agent watches it.
func AcceptedKey(cluster string) string { return token(cluster) + ".accepted" }

// AcceptedSubject is the subject of a cluster's acceptance key in the
// clusters bucket's stream.
func AcceptedSubject(cluster string) string {
	return "$KV." + BucketClusters + "." + AcceptedKey(cluster)
}

// StatusBundleSubject is where an imported status bundle of a cluster is
// published (pkg/bundle): its agent's signature says who wrote it.
func StatusBundleSubject(cluster string) string { return join(prefixBundles+".status", cluster) }

// AgentKeySubject is the subject of a cluster's registered key.
func AgentKeySubject(cluster string) string {
	return "$KV." + BucketClusters + "." + AgentKeyKey(cluster)
}

// SeenKey is the clusters-bucket key holding the cluster's last heartbeat.
func SeenKey(cluster string) string { return token(cluster) + ".seen" }

// AgentKeyKey is the clusters-bucket key holding the public NKey the
// cluster's agent joined with (the first join registers it).
func AgentKeyKey(cluster string) string { return token(cluster) + ".agentkey" }

// RevokedPrefix starts the clusters bucket's keys that list the agent
// keys the hub revoked (RevokedKey), so that a revocation the servers lose
// is put back. No cluster's name starts with '_'.
const RevokedPrefix = "_revoked."

// RevokedKey records that pub is revoked.
func RevokedKey(pub string) string { return RevokedPrefix + token(pub) }

// CredentialKey is the clusters-bucket key holding the user JWT the hub
// signed for the cluster's agent when it accepted the cluster (pkg/creds).
func CredentialKey(cluster string) string { return token(cluster) + ".credential" }

// CredentialSubject is the subject of a cluster's credential key.
func CredentialSubject(cluster string) string {
	return "$KV." + BucketClusters + "." + CredentialKey(cluster)
}

func join(prefix string, names ...string) string {
	parts := []string{prefix}
	for _, n := range names {
		parts = append(parts, token(n))
	}
	return strings.Join(parts, ".")
}
