package bus

import "strings"

// A site's leaf node links into an account of its own at the hub, never
// into the services' account: a leaf link's user's permissions do not
// hold for JetStream acks and service replies (the server forwards them
// unchecked), and in the services' account an ack sent by a site that
// lies, asking for the next message of another cluster's agent's
// consumer or terminating the gate's, would hand it others' work or drop
// their approvals. The site's account holds the site's two streams at the
// hub, which the dispatcher keeps (pkg/site): its outbox, sourcing from
// the services' streams exactly what the site's clusters are to get
// (their work, acceptance and credentials), and its inbox, holding
// whatever the site sends, from which the services' streams take only
// what the site's own clusters may say. Between the two accounts only the
// server's own sourcing crosses (SiteImports, SiteExports). The site's
// link user is scoped by names that never change as clusters come and go
// (SiteLinkPermissions): no credential to reissue when a cluster joins or
// leaves a site.

// SiteOutbox is the stream, in a site's account at the hub, its clusters'
// work and acceptance are sourced into for the site to source.
func SiteOutbox(site string) string { return "SITE_" + token(site) + "_OUTBOX" }

// SiteInbox is the stream, in a site's account at the hub, that takes in
// everything the site sends.
func SiteInbox(site string) string { return "SITE_" + token(site) + "_INBOX" }

// SiteAccount is the name of a site's account at the hub.
func SiteAccount(site string) string { return "SITE_" + token(site) }

// SiteOutboxConsumers are the durable consumers of a site's outbox that
// the dispatcher makes and the site's streams source by (the site may
// only reset them to where it stands: it makes no consumer at the hub),
// each with its filter and the subject it delivers to over the link.
func SiteOutboxConsumers(site string) []SiteConsumer {
	to := SiteDeliverTo(site)
	return []SiteConsumer{
		{Name: "site-work", Stream: StreamWork, Filter: WorkAll, DeliverTo: to + ".work"},
		{Name: "site-clusters", Stream: KVStream(BucketClusters), Filter: KVAll(BucketClusters), DeliverTo: to + ".kv"},
	}
}

// A SiteConsumer is a durable consumer of a site's outbox: what its site
// stream Stream takes from it.
type SiteConsumer struct {
	Name, Stream, Filter, DeliverTo string
}

// SiteDeliverTo prefixes the delivery subjects of a site's outbox's
// consumers (the hub sends there, over the link); SiteDeliverFrom those of
// the inbox's sources of the site (the site sends there).
func SiteDeliverTo(site string) string   { return "flotilla.sites." + token(site) + ".to" }
func SiteDeliverFrom(site string) string { return "flotilla.sites." + token(site) + ".from" }

// SiteDeliverHub prefixes the deliveries of the services' streams to a
// site's outbox (services' account to the site's); SiteDeliverIn those of
// a site's inbox to the services' streams (the other way).
func SiteDeliverHub(site string) string { return "flotilla.sites." + token(site) + ".hub" }
func SiteDeliverIn(site string) string  { return "flotilla.sites." + token(site) + ".in" }

// ServicesAPIPrefix is the services' account's JetStream API as a site's
// account imports it (the consumer API of what its outbox sources only).
const ServicesAPIPrefix = "$JS.flotilla.API"

// SiteAccountAPIPrefix is a site's account's JetStream API at the hub as
// the services' account imports it (the consumer API of its inbox only).
func SiteAccountAPIPrefix(site string) string { return "$JS." + SiteAccount(site) + ".API" }

// SiteInboxPrefix is the reply-subject prefix of the dispatcher's requests
// in a site's account (to its domain, its outbox and its live reads).
func SiteInboxPrefix(site string) string { return "_INBOX_site_" + token(site) }

// LiveReadInboxPrefix is the reply-subject prefix of the live reads the
// dispatcher asks agents at the hub (pkg/liveread), on a connection of
// their own; an agent at a site is asked in its site's account.
const LiveReadInboxPrefix = "_INBOX_liveread"

// jsReplies are the reply subjects of the servers' own JetStream requests
// across a leaf link (setting up a source's consumer on the other side).
const jsReplies = "$JSC.R.>"

// consumerAPI is what a stream's sourcing asks of another account's
// JetStream about its origin: create its consumer (with one filter or
// several) and delete it.
func consumerAPI(stream, to string) []Import {
	var out []Import
	for _, verb := range []string{"CREATE", "DELETE"} {
		s := "CONSUMER." + verb + "." + stream
		out = append(out,
			Import{Subject: ServiceAPI + "." + s, To: to + "." + s},
			Import{Subject: ServiceAPI + "." + s + ".>", To: to + "." + s + ".>"})
	}
	// Flow control answers are the reply subjects of deliveries: not renamed.
	return append(out, Import{Subject: "$JS.FC." + stream + ".>"})
}

// SiteImports are all that crosses from the services' account into a
// site's account at the hub: what its outbox's sources of the services'
// work and clusters' registry need, and nothing a site's link may use
// (SiteLinkPermissions names none of it).
func SiteImports(site string) []Import {
	out := consumerAPI(StreamWork, ServicesAPIPrefix)
	out = append(out, consumerAPI(KVStream(BucketClusters), ServicesAPIPrefix)...)
	return append(out, Import{Subject: SiteDeliverHub(site) + ".>", Feed: true})
}

// SiteExports are all that crosses from a site's account at the hub into
// the services' account: what the services' status and clusters streams'
// sources of the site's inbox need.
func SiteExports(site string) []Import {
	out := consumerAPI(SiteInbox(site), SiteAccountAPIPrefix(site))
	return append(out, Import{Subject: SiteDeliverIn(site) + ".>", Feed: true})
}

// SiteLinkPermissions are a site leaf node's link's at the hub, in the
// site's own account (a leaf user's publish is what the site may send,
// its subscribe what the hub sends it). The site may: reset the outbox's
// consumers its streams source by to where it stands, and answer their
// flow control; deliver to the inbox's sources; answer the dispatcher's
// and the hub server's requests to its domain, and live reads. It
// receives: those requests, its outbox's deliveries, live reads of its
// clusters, and the answers to its own requests. It makes no consumer and
// no stream at the hub.
func SiteLinkPermissions(site string) Permissions {
	out := SiteOutbox(site)
	var publish []string
	// The request crosses as the site sends it ($JS.hub.API, the hub's
	// domain) and is mapped at the hub; both forms, so that neither the
	// hub's nor a future server's check on the mapped subject refuses it.
	for _, api := range []string{ServiceAPI, "$JS." + HubDomain + ".API"} {
		for _, c := range SiteOutboxConsumers(site) {
			publish = append(publish, api+".CONSUMER.RESET."+out+"."+c.Name)
		}
	}
	publish = append(publish,
		"$JS.FC."+out+".>",
		SiteDeliverFrom(site)+".>",
		SiteInboxPrefix(site)+".>",
		jsReplies,
	)
	return Permissions{
		Publish: publish,
		Subscribe: []string{
			"$JS." + token(site) + ".API.>",
			SiteDeliverTo(site) + ".>",
			// The flow control of the consumers the inbox sources the
			// site's streams by.
			"$JS.FC." + StreamStatus + ".>",
			"$JS.FC." + StreamClusters + ".>",
			jsReplies,
			// Live reads: the dispatcher asks only the site's own
			// clusters' in the site's account.
			QueryFilter,
		},
	}
}

// SiteDispatcherPermissions are the dispatcher's in a site's account at
// the hub: the account's JetStream (its outbox and inbox and the outbox's
// consumers), the site's domain over the link (the site's streams, its
// agents' consumers), and its clusters' live reads.
func SiteDispatcherPermissions(site string) Permissions {
	return Permissions{
		Publish:   []string{ServiceAPI + ".>", "$JS." + token(site) + ".API.>", QueryFilter},
		Subscribe: []string{SiteInboxPrefix(site) + ".>"},
	}
}

// HubDomain is the hub's JetStream domain, which sites source from.
const HubDomain = "hub"

// ReservedSiteName says whether a site may not have name as its domain:
// the hub's, or one whose API prefix ($JS.<name>.API) is already the
// services' account's or a site account's as imported at the hub.
func ReservedSiteName(name string) bool {
	return strings.EqualFold(name, HubDomain) || "$JS."+name+".API" == ServicesAPIPrefix ||
		strings.HasPrefix(strings.ToUpper(name), "SITE_")
}
