package bus

// The hub's NATS keeps Flotilla's state in one account, and puts the
// identities that run in managed clusters (agents, and agents asking to
// join) in another that holds nothing, and chat bots in a third. The server answers a JetStream
// request, and acknowledges a publish into a stream, on whatever reply
// subject the client names, unchecked against the client's rights; in one
// account a cluster could so write any subject a stream keeps (another
// cluster's registered key, its work, a run). Across accounts the answer
// goes back through the import to the requester's own account, where no
// stream listens.
const (
	// ServiceAPI is the JetStream API in the account that holds it.
	ServiceAPI = "$JS.API"
	// ClusterAPI is the Flotilla account's JetStream API as the clusters'
	// account imports it: what agents' JetStream contexts use (on a server
	// with one account, a mapping to ServiceAPI).
	ClusterAPI = "flotilla.jsapi"
)

// An Import is a subject the Flotilla account exports and another
// account imports: as a service (requests and publishes go in, answers
// come back) unless Feed.
type Import struct {
	// Subject in the Flotilla account.
	Subject string
	// To is the subject as the importing account sees it ("": Subject).
	To string
	// Stream: answered by more than one message (a pull request's batch).
	Stream bool
	// Feed: messages flow out of the Flotilla account only (a stream
	// export, subscribed to).
	Feed bool
}

// ClusterImports are all that crosses from the clusters' account into the
// Flotilla account, for every cluster: each user's rights
// (AgentPermissions, BootstrapPermissions) narrow them to its own.
func ClusterImports() []Import {
	api := func(s string, stream bool) Import {
		return Import{Subject: ServiceAPI + "." + s, To: ClusterAPI + "." + s, Stream: stream}
	}
	kv := "DIRECT.GET." + kvStream(BucketClusters) + ".$KV." + BucketClusters + ".*."
	return []Import{
		{Subject: prefixStatus + ".>"},
		{Subject: prefixClusters + ".>"},
		api(kv+"accepted", false),
		api(kv+"credential", false),
		api("DIRECT.GET."+StreamWork+"."+prefixWork+".>", false),
		api("CONSUMER.INFO."+StreamWork+".*", false),
		api("CONSUMER.MSG.NEXT."+StreamWork+".*", true),
		// Acks are the reply subjects of delivered work: not renamed.
		{Subject: "$JS.ACK." + StreamWork + ".>"},
	}
}

// ClusterExports are what the clusters' account answers the Flotilla
// account: agents' live reads.
func ClusterExports() []string { return []string{QueryFilter} }

// BotImports are all that crosses between the bots' account and the
// Flotilla account: approvals in (the gate's stream acknowledges them),
// approval requests out. Chat bots face the internet; in the Flotilla
// account the reply subject of an approval could name any state there.
// Each bot's rights (BotPermissions) narrow them to its namespaces.
func BotImports() []Import {
	return []Import{
		{Subject: prefixApprovals + ".>"},
		{Subject: prefixGate + ".requested.>", Feed: true},
	}
}
