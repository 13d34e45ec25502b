package bus

// Permissions are the subjects a NATS user may publish and subscribe to.
type Permissions struct {
	// Publish lists what may be published; empty (not nil): nothing.
	Publish   []string
	Subscribe []string
	// AllowResponses lets the user answer requests (live queries).
	AllowResponses bool
}

// Every identity reads only its own replies: its inbox prefix is its own,
// and derived so that no cluster's name can make it another's (an agent's
// is _INBOX_agent_<cluster>; a cluster named "cli" gets _INBOX_agent_cli,
// not the CLI's _INBOX_cli).
const (
	CLIInboxPrefix        = "_INBOX_cli"
	BotInboxPrefix        = "_INBOX_bot"
	PlannerInboxPrefix    = "_INBOX_planner"
	DispatcherInboxPrefix = "_INBOX_dispatcher"
	GateInboxPrefix       = "_INBOX_gate"
	BootstrapInboxPrefix  = "_INBOX_bootstrap"
	BundlerInboxPrefix    = "_INBOX_bundler"
)

// ServiceInboxPrefix is the reply-subject prefix of a hub service
// (planner, dispatcher, gate).
func ServiceInboxPrefix(service string) string { return "_INBOX_" + service }

// InboxPrefix is the reply-subject prefix of a cluster's agent.
func InboxPrefix(cluster string) string { return "_INBOX_agent_" + token(cluster) }

// AgentConsumer is the durable work consumer of a cluster's agent; the
// dispatcher creates it when the hub accepts the cluster.
func AgentConsumer(cluster string) string { return "agent-" + token(cluster) }

// Buckets' and the object store's streams, as JetStream names them.
func kvStream(bucket string) string { return KVStream(bucket) }

// KVStream is the stream of a KV bucket.
func KVStream(bucket string) string  { return "KV_" + bucket }
func objStream(bucket string) string { return "OBJ_" + bucket }

// owns is what the owner of a stream may do with it: set it up, read and
// consume it, and manage its consumers.
func owns(stream string) []string {
	return []string{
		"$JS.API.STREAM.*." + stream,
		"$JS.API.STREAM.MSG.*." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.*." + stream + ".>",
		"$JS.API.CONSUMER.*.*." + stream + ".>",
		"$JS.ACK." + stream + ".>",
	}
}

// reads is what a service that consumes a stream another owns may do: read
// its configuration and run its own consumers on it.
func reads(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.*." + stream + ".>",
		"$JS.API.CONSUMER.*.*." + stream + ".>",
		"$JS.ACK." + stream + ".>",
	}
}

// ownsKV is a bucket's owner's: the stream, and writing its keys.
func ownsKV(bucket string) []string {
	return append(owns(kvStream(bucket)), "$KV."+bucket+".>")
}

// ownsObjects is the object store's owner's: the stream, and writing objects.
func ownsObjects(bucket string) []string {
	return append(owns(objStream(bucket)), "$O."+bucket+".>")
}

// deadLetters are the advisories of a service's consumers giving up.
func deadLetters(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out, DeadLetterSubject(s))
	}
	return out
}

// accountInfo is what setting up a bucket asks first (the account's
// JetStream limits; it names no stream's subjects).
const accountInfo = "$JS.API.INFO"

func join2(lists ...[]string) []string {
	out := []string{accountInfo}
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// PlannerPermissions: the planner writes step events and its run state and
// snapshots, owns the status stream (agents write it, it reads it), and
// reads the dispatcher's answers and the gate's decisions. It writes no
// work, no decision, no approval.
func PlannerPermissions() Permissions {
	return Permissions{
		Publish: join2(
			[]string{prefixSteps + ".>"},
			owns(StreamSteps), owns(StreamStatus), ownsKV(BucketRuns), ownsObjects(ObjectSnapshots),
			reads(StreamDispatch), reads(StreamGate), reads(StreamBundles),
			// The keys clusters joined with, and whether they are accepted:
			// a status bundle's signer.
			[]string{
				"$JS.API.DIRECT.GET." + kvStream(BucketClusters) + ".$KV." + BucketClusters + ".*.agentkey",
				"$JS.API.DIRECT.GET." + kvStream(BucketClusters) + ".$KV." + BucketClusters + ".*.accepted",
			},
		),
		Subscribe: join2([]string{PlannerInboxPrefix + ".>"}, deadLetters(StreamStatus, StreamDispatch, StreamGate)),
	}
}

// sitesAPI is what the dispatcher does at the hub for its air-gapped
// sites (pkg/site): set the sources through which the status and clusters
// streams take sites' reports in (from their inboxes). All else of a site
// it does in the site's own account (SiteDispatcherPermissions).
func sitesAPI() []string {
	return []string{"$JS.API.STREAM.INFO." + StreamStatus, "$JS.API.STREAM.UPDATE." + StreamStatus}
}

// DispatcherPermissions: the dispatcher writes work and its answers, owns
// the clusters' stream and registry and the agents' consumers at the hub,
// reads step events and snapshots, and asks agents for live reads (for
// people the hub's RBAC lets read, pkg/liveread). It writes no step event
// and no decision. What it does for sites is in their own accounts
// (SiteDispatcherPermissions), but for the sources of their inboxes.
func DispatcherPermissions() Permissions {
	subscribe := join2([]string{DispatcherInboxPrefix + ".>", LiveReadInboxPrefix + ".>"}, deadLetters(StreamSteps, StreamClusters))
	return Permissions{
		Publish: join2(
			[]string{prefixWork + ".>", prefixDispatch + ".>", QueryFilter},
			owns(StreamWork), owns(StreamDispatch), owns(StreamClusters), owns(StreamBundles), ownsKV(BucketClusters),
			reads(StreamSteps), reads(objStream(ObjectSnapshots)), sitesAPI(),
		),
		Subscribe: subscribe,
	}
}

// GatePermissions: the gate, which faces the internet, writes approval
// requests, decisions and audit records and its waits, owns the bots'
// approvals stream, and reads step events and snapshots (to show approvers
// what they approve). It can write neither steps nor work.
func GatePermissions() Permissions {
	return Permissions{
		Publish: join2(
			[]string{prefixGate + ".>"},
			owns(StreamApprovals), owns(StreamGate), ownsKV(BucketGate),
			reads(StreamSteps), reads(objStream(ObjectSnapshots)),
		),
		Subscribe: join2([]string{GateInboxPrefix + ".>"}, deadLetters(StreamSteps, StreamApprovals)),
	}
}

// AgentPermissions is everything a cluster's agent may do on NATS, in
// the clusters' account (ClusterImports): publish its joins, heartbeats
// and status; fetch, ack and read the info of its own work consumer (which
// the hub made for it); read its own newest work and its own acceptance by
// direct get on their subjects; answer its live queries. It cannot make or
// change a consumer, list any stream's subjects, read another cluster's
// work (manifests, Secrets) or speak for it.
func AgentPermissions(cluster string) Permissions {
	c := token(cluster)
	cons := AgentConsumer(cluster)
	return Permissions{
		Publish: []string{
			prefixStatus + "." + c + ".>",
			// Its joins and heartbeats only: one subject each, whose
			// per-subject limit bounds what it can store there.
			ClusterSubject(cluster, "join"),
			ClusterSubject(cluster, "heartbeat"),
			ClusterAPI + ".DIRECT.GET." + kvStream(BucketClusters) + ".$KV." + BucketClusters + "." + AcceptedKey(cluster),
			ClusterAPI + ".DIRECT.GET." + StreamWork + "." + prefixWork + "." + c + ".>",
			ClusterAPI + ".CONSUMER.INFO." + StreamWork + "." + cons,
			ClusterAPI + ".CONSUMER.MSG.NEXT." + StreamWork + "." + cons,
			"$JS.ACK." + StreamWork + "." + cons + ".>",
		},
		Subscribe:      []string{InboxPrefix(cluster) + ".>", QuerySubject(cluster)},
		AllowResponses: true,
	}
}

// BootstrapPermissions are a joining agent's, with the bootstrap
// credential every cluster that asks to join shares, in the clusters'
// account: ask to join as any cluster (the hub registers the key the first
// join is signed with, and trusts a later join only signed with it), and
// read any cluster's acceptance and credential, neither of them secret (a
// user JWT is of no use without its seed). No heartbeat, no status, no work.
func BootstrapPermissions() Permissions {
	get := ClusterAPI + ".DIRECT.GET." + kvStream(BucketClusters) + ".$KV." + BucketClusters + ".*."
	return Permissions{
		Publish:   []string{prefixClusters + ".*.join", get + "accepted", get + "credential"},
		Subscribe: []string{BootstrapInboxPrefix + ".>"},
	}
}

// BundlerPermissions: whoever carries bundles to and from sites with no
// link (kubectl flotilla bundle export / import) reads clusters' newest
// work, which holds their releases' objects, Secrets too: an operator's
// identity, never a service's or a bot's. It writes only status bundles,
// which count only as far as their agents' signatures do.
func BundlerPermissions() Permissions {
	return Permissions{
		Publish: []string{
			accountInfo,
			"$JS.API.STREAM.INFO." + StreamWork,
			"$JS.API.DIRECT.GET." + StreamWork,
			"$JS.API.DIRECT.GET." + StreamWork + ".>",
			"$JS.API.STREAM.MSG.GET." + StreamWork,
			// Status bundles back from the sites (their agents sign them).
			prefixBundles + ".status.*",
		},
		Subscribe: []string{BundlerInboxPrefix + ".>"},
	}
}

// IssuerPermissions are the dispatcher's in the system account, to revoke
// agents: read the clusters' account's JWT and push it back changed, and
// no other account's.
func IssuerPermissions(account string) Permissions {
	return Permissions{
		Publish:   []string{"$SYS.REQ.ACCOUNT." + account + ".CLAIMS.LOOKUP", "$SYS.REQ.ACCOUNT." + account + ".CLAIMS.UPDATE"},
		Subscribe: []string{DispatcherInboxPrefix + ".>"},
	}
}

// SiteResolverPermissions are a site leaf node's system-account link's,
// at the hub (a leaf user's publish is what the site may send, its
// subscribe what the hub sends it): the account updates the hub's
// resolver takes (revocations), and the site's resolver asking for the
// accounts it lacks; nothing else of the system account.
func SiteResolverPermissions() Permissions {
	return Permissions{
		Publish: []string{"$SYS.REQ.CLAIMS.PACK", "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP"},
		Subscribe: []string{"$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE", "$SYS.REQ.CLAIMS.UPDATE", "$SYS.ACCOUNT.*.CLAIMS.UPDATE",
			"$SYS._INBOX.>", "_INBOX.>"},
		AllowResponses: true,
	}
}

// CLIPermissions: nothing to publish. A person's live reads go through
// the hub's API server (pkg/liveread), which asks agents itself only for
// whom the hub's RBAC lets read: a NATS login shared by people must not
// reach agents around it.
func CLIPermissions() Permissions {
	return Permissions{Publish: []string{}, Subscribe: []string{CLIInboxPrefix + ".>"}}
}

// BotPermissions: a chat bot publishes approvals of the namespaces it is
// trusted in ("*" for all) and reads what waits there.
func BotPermissions(namespaces ...string) Permissions {
	if len(namespaces) == 0 {
		namespaces = []string{"*"}
	}
	p := Permissions{Subscribe: []string{BotInboxPrefix + ".>"}}
	for _, ns := range namespaces {
		n := ns
		if n != "*" {
			n = token(ns)
		}
		p.Publish = append(p.Publish, prefixApprovals+"."+n+".*")
		p.Subscribe = append(p.Subscribe, prefixGate+".requested."+n+".*")
	}
	return p
}
