package bus

// Permissions are the subjects a NATS user may publish and subscribe to.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// AllowResponses lets the user answer requests (live queries).
	AllowResponses bool
}

// InboxPrefix is the reply-subject prefix of a cluster's agent: it may
// subscribe to its own inboxes only.
func InboxPrefix(cluster string) string { return "_INBOX_" + token(cluster) }

// AgentConsumer is the durable work consumer of a cluster's agent.
func AgentConsumer(cluster string) string { return "agent-" + token(cluster) }

// AgentPermissions is everything a cluster's agent may do on NATS: publish
// its joins, heartbeats and status; pull its own work consumer; read its own
// work and acceptance by direct get; answer its live queries. It can neither
// read another cluster's work (manifests, Secrets) nor speak for it.
func AgentPermissions(cluster string) Permissions {
	c := token(cluster)
	cons := AgentConsumer(cluster)
	kvStream := "KV_" + BucketClusters
	return Permissions{
		Publish: []string{
			prefixStatus + "." + c + ".>",
			prefixClusters + "." + c + ".>",
			"$JS.API.STREAM.INFO." + kvStream,
			"$JS.API.DIRECT.GET." + kvStream + ".$KV." + BucketClusters + "." + AcceptedKey(cluster),
			"$JS.API.STREAM.INFO." + StreamWork,
			"$JS.API.DIRECT.GET." + StreamWork + "." + prefixWork + "." + c + ".>",
			"$JS.API.CONSUMER.CREATE." + StreamWork + "." + cons + "." + prefixWork + "." + c + ".>",
			"$JS.API.CONSUMER.INFO." + StreamWork + "." + cons,
			"$JS.API.CONSUMER.MSG.NEXT." + StreamWork + "." + cons,
			"$JS.ACK." + StreamWork + "." + cons + ".>",
		},
		Subscribe:      []string{InboxPrefix(cluster) + ".>", QuerySubject(cluster)},
		AllowResponses: true,
	}
}

// Inbox prefixes of the CLI and of bots: like agents, they may read only
// their own replies, never the services' (which carry manifests).
const (
	CLIInboxPrefix = "_INBOX_cli"
	BotInboxPrefix = "_INBOX_bot"
)

// CLIPermissions: live queries to agents.
func CLIPermissions() Permissions {
	return Permissions{Publish: []string{QueryFilter}, Subscribe: []string{CLIInboxPrefix + ".>"}}
}

// BotPermissions: a chat bot publishes approvals and reads what waits.
func BotPermissions() Permissions {
	return Permissions{
		Publish:   []string{ApprovalsFilter},
		Subscribe: []string{prefixGate + ".requested.>", BotInboxPrefix + ".>"},
	}
}
