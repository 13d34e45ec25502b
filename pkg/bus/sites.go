package bus

// A site's leaf node reaches the hub's streams only through two streams of
// its own at the hub, which the dispatcher keeps (pkg/site): its outbox,
// holding exactly what the site's clusters are to get (their work, their
// acceptance and credentials, sourced from the hub's streams), and its
// inbox, holding whatever the site sends (sourced from the site's reports
// and joins), from which the hub's streams take only what the site's own
// clusters may say. So the site's link user is scoped by names that never
// change as clusters come and go (SiteLinkPermissions): no credential to
// reissue when a cluster joins or leaves a site, and a site that lies
// reaches neither another cluster's work nor another cluster's reports.

// SiteOutbox is the hub stream a site sources its clusters' work and
// acceptance from.
func SiteOutbox(site string) string { return "SITE_" + token(site) + "_OUTBOX" }

// SiteInbox is the hub stream that takes in everything a site sends.
func SiteInbox(site string) string { return "SITE_" + token(site) + "_INBOX" }

// SiteDeliverTo prefixes the delivery subjects of a site's sources of its
// outbox (the hub sends there, over the link); SiteDeliverFrom those of
// the inbox's sources of the site (the site sends there). Each site's own,
// so that no site can feed another's sources, nor the hub's own.
func SiteDeliverTo(site string) string   { return "flotilla.sites." + token(site) + ".to" }
func SiteDeliverFrom(site string) string { return "flotilla.sites." + token(site) + ".from" }

// SiteInboxPrefix is the reply-subject prefix of the dispatcher's requests
// to a site (its own per site: a site answers only its own requests).
func SiteInboxPrefix(site string) string { return "_INBOX_site_" + token(site) }

// LiveReadInboxPrefix is the reply-subject prefix of the live reads the
// dispatcher asks agents (pkg/liveread), on a connection of their own: the
// one service inbox a site's link may answer besides its own.
const LiveReadInboxPrefix = "_INBOX_liveread"

// jsReplies are the reply subjects of the servers' own JetStream requests
// across a leaf link (setting up a source's consumer on the other side).
const jsReplies = "$JSC.R.>"

// SiteLinkPermissions are a site leaf node's link's at the hub, in the
// services' account (a leaf user's publish is what the site may send, its
// subscribe what the hub sends it). The site may: make and remove the
// consumers its streams source its outbox by, and answer their flow
// control; deliver to the inbox's sources; answer the dispatcher's and
// the hub server's requests to its domain, and live reads. It receives:
// those requests, its outbox's deliveries, live reads, and the answers to
// its own requests. Nothing else of the account: no other stream, no core subject of the services,
// no other cluster's work or reports.
func SiteLinkPermissions(site string) Permissions {
	out := SiteOutbox(site)
	var publish []string
	// The request crosses as the site sends it ($JS.hub.API, the hub's
	// domain) and is mapped at the hub; both forms, so that neither the
	// hub's nor a future server's check on the mapped subject refuses it.
	for _, api := range []string{"$JS.API", "$JS." + HubDomain + ".API"} {
		publish = append(publish,
			api+".CONSUMER.CREATE."+out+".>",
			api+".CONSUMER.DELETE."+out+".>",
		)
	}
	publish = append(publish,
		"$JS.FC."+out+".>",
		SiteDeliverFrom(site)+".>",
		SiteInboxPrefix(site)+".>",
		LiveReadInboxPrefix+".>",
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
			// Live reads of its clusters (kubectl flotilla get). Every
			// cluster's query subject: they name no site, so a site that
			// lies hears, and may answer, live reads of clusters not
			// there (what a person asked to see, never work or state).
			QueryFilter,
		},
	}
}

// HubDomain is the hub's JetStream domain, which sites source from.
const HubDomain = "hub"

// siteStreams is what the dispatcher does at the hub with its sites'
// outboxes and inboxes: set them up and purge a cluster that left.
func siteStreams(sites []string) []string {
	var out []string
	for _, s := range sites {
		for _, st := range []string{SiteOutbox(s), SiteInbox(s)} {
			for _, verb := range []string{"CREATE", "UPDATE", "INFO", "PURGE"} {
				out = append(out, "$JS.API.STREAM."+verb+"."+st)
			}
		}
	}
	return out
}
