// Package site owns air-gapped sites: a site is a NATS leaf node with its
// own JetStream domain, where a few clusters' agents connect. It owns each
// site's two streams at the hub (its outbox, sourcing from the hub's
// streams exactly its clusters' work and acceptance; its inbox, taking in
// whatever the site sends), the site's own streams (work and acceptance
// sourced from its outbox, reports and heartbeats kept there), the sources
// through which the hub's status and clusters streams take from the inbox
// only what the site's clusters may say, and the watch of each site's link
// that re-adds the sources across it the moment the link returns: the
// server's own source retry backs off for tens of seconds after a long
// outage, and nothing else brings catch-up under a second. The outbox and
// inbox are what lets the site's link user be scoped by names that never
// change (bus.SiteLinkPermissions).
package site

import (
	"slices"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Label is the ManagedCluster label naming the site (the leaf node's
// JetStream domain) a cluster's agent is connected to. The agent proposes
// it when it joins; the hub's admin owns it from then on.
const Label = "flotilla.dev/site"

// HubDomain is the hub's JetStream domain, which sites source from.
const HubDomain = bus.HubDomain

// Site is one site: its JetStream domain and the clusters there.
type Site struct {
	Name     string
	Clusters []string
}

// LinkDeny are the subjects a site's link never carries, in either
// direction: reports and heartbeats reach the hub only through the
// sources this package sets up (in order, each once), never also as core
// messages that the hub's streams would capture a second time; and no
// other cluster's reports reach a site. (The link's user at the hub,
// bus.SiteLinkPermissions, allows them neither way: this is the site's
// own side of it.)
func LinkDeny() []string {
	return []string{bus.StatusAll, bus.ClustersAll}
}

// apiPrefix is the JetStream API of a domain, as seen from another.
func apiPrefix(domain string) string { return "$JS." + domain + ".API" }

// placeholder is the subject of a stream that holds only sourced messages:
// a stream must have subjects or sources, and its sources come and go.
// Nothing publishes there (the site's users may not).
func placeholder(stream string) string { return "flotilla.site-local." + stream }

// across is a source of a stream in another domain, delivered under
// prefix (its own per site and direction: the link's user may deliver to,
// or receive, only its own site's).
func across(stream, domain, prefix, filter string) *jetstream.StreamSource {
	return &jetstream.StreamSource{Name: stream, FilterSubject: filter, OptStartSeq: 1,
		External: &jetstream.ExternalStream{APIPrefix: apiPrefix(domain), DeliverPrefix: prefix}}
}

// local is a source of a stream in the same domain (the hub's own
// streams and a site's outbox and inbox), filtered to subjects by one
// source: a cluster's subjects come in the order they were written. A
// source new to its stream starts at the origin's first message (the
// server's default would start at the stream's newest message's time and
// miss what a cluster joining a site already has).
func local(stream string, subjects ...string) *jetstream.StreamSource {
	src := &jetstream.StreamSource{Name: stream, OptStartSeq: 1}
	if len(subjects) == 1 {
		src.FilterSubject = subjects[0]
		return src
	}
	for _, s := range subjects {
		src.SubjectTransforms = append(src.SubjectTransforms, jetstream.SubjectTransformConfig{Source: s, Destination: s})
	}
	return src
}

func sorted(cs []string) []string {
	out := slices.Clone(cs)
	sort.Strings(out)
	return slices.Compact(out)
}

// siteStreams are the streams of a site's own domain. Work and acceptance
// come from the site's outbox at the hub, which holds only the site's
// clusters'; reports and heartbeats are published there by the agents
// (whose publish is acked by the site, link or no link) and taken in by
// the site's inbox at the hub. Their sources never change as clusters come
// and go.
func siteStreams(s Site, o bus.SetupOptions) []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	var status []string
	for _, c := range sorted(s.Clusters) {
		status = append(status, bus.StatusFilter(c))
	}
	if len(status) == 0 {
		status = []string{placeholder(bus.StreamStatus)}
	}
	hubWork := bus.StreamConfig(bus.StreamWork, o)
	hubStatus := bus.StreamConfig(bus.StreamStatus, o)
	hubClusters := bus.StreamConfig(bus.StreamClusters, o)
	outbox, to := bus.SiteOutbox(s.Name), bus.SiteDeliverTo(s.Name)
	return []jetstream.StreamConfig{
		{
			Name: bus.StreamWork, Description: "the site's clusters' work, sourced from the site's outbox at the hub: last value per subject",
			Subjects:          []string{placeholder(bus.StreamWork)},
			Sources:           []*jetstream.StreamSource{across(outbox, HubDomain, to+".work", bus.WorkAll)},
			MaxMsgsPerSubject: 1, MaxBytes: hubWork.MaxBytes, MaxMsgSize: hubWork.MaxMsgSize,
			AllowDirect: true, Storage: storage, Replicas: 1,
		},
		{
			// Its acceptance and the credential the hub signed it: an
			// agent at the site joins there as at the hub.
			Name: bus.KVStream(bus.BucketClusters), Description: "the site's clusters' acceptance and credentials, sourced from the site's outbox at the hub",
			Subjects:          []string{placeholder(bus.KVStream(bus.BucketClusters))},
			Sources:           []*jetstream.StreamSource{across(outbox, HubDomain, to+".kv", bus.KVAll(bus.BucketClusters))},
			MaxMsgsPerSubject: 1, MaxBytes: 1 << 20, AllowDirect: true, Storage: storage, Replicas: 1,
		},
		{
			Name: bus.StreamStatus, Description: "the site's clusters' reports, kept while the link is down; the hub's inbox of the site sources them",
			Subjects: status, MaxAge: hubStatus.MaxAge, MaxBytes: hubStatus.MaxBytes, MaxMsgSize: hubStatus.MaxMsgSize,
			MaxMsgsPerSubject: hubStatus.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubStatus.Duplicates,
			Storage: storage, Replicas: 1,
		},
		{
			// Every join at the site lands here, of clusters the hub does
			// not know yet too: the hub takes in the joins of all and the
			// heartbeats of its clusters there.
			Name: bus.StreamClusters, Description: "joins and heartbeats of the site's agents, kept while the link is down; the hub's inbox of the site sources them",
			Subjects: []string{bus.ClustersAll}, MaxAge: hubClusters.MaxAge, MaxBytes: hubClusters.MaxBytes, MaxMsgSize: hubClusters.MaxMsgSize,
			MaxMsgsPerSubject: hubClusters.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubClusters.Duplicates,
			Storage: storage, Replicas: 1,
		},
	}
}

// boxes are the site's two streams at the hub. Its outbox takes from the
// hub's streams exactly what the site's clusters are to get; its inbox
// takes in everything the site sends, whatever a site that lies puts
// there: the hub's streams take from it only what the site's clusters may
// say (hubSources).
func boxes(s Site, o bus.SetupOptions) []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	var out []*jetstream.StreamSource
	for _, c := range sorted(s.Clusters) {
		out = append(out,
			local(bus.StreamWork, bus.WorkFilter(c)),
			local(bus.KVStream(bus.BucketClusters), bus.AcceptedSubject(c), bus.CredentialSubject(c)))
	}
	hubWork := bus.StreamConfig(bus.StreamWork, o)
	hubStatus := bus.StreamConfig(bus.StreamStatus, o)
	hubClusters := bus.StreamConfig(bus.StreamClusters, o)
	from := bus.SiteDeliverFrom(s.Name)
	return []jetstream.StreamConfig{
		{
			Name: bus.SiteOutbox(s.Name), Description: "what site " + s.Name + "'s clusters are to get: their work, acceptance and credentials",
			Subjects: []string{placeholder(bus.SiteOutbox(s.Name))}, Sources: out,
			MaxMsgsPerSubject: 1, MaxBytes: hubWork.MaxBytes, MaxMsgSize: hubWork.MaxMsgSize, Storage: storage, Replicas: 1,
		},
		{
			Name: bus.SiteInbox(s.Name), Description: "what site " + s.Name + " sends: its clusters' reports, joins and heartbeats",
			Subjects: []string{placeholder(bus.SiteInbox(s.Name))},
			Sources: []*jetstream.StreamSource{
				across(bus.StreamStatus, s.Name, from+".status", ""),
				across(bus.StreamClusters, s.Name, from+".clusters", ""),
			},
			// No message size of its own: a stream may source only one
			// whose messages are no larger than its own, and the inbox
			// feeds both the status stream and the (smaller) clusters'.
			// The site's streams bound what its agents send; a message
			// from a site that lies, too large for the hub's stream,
			// holds up only that site's own source of it.
			MaxAge: max(hubStatus.MaxAge, hubClusters.MaxAge), MaxBytes: hubStatus.MaxBytes + hubClusters.MaxBytes,
			MaxMsgsPerSubject: hubStatus.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubStatus.Duplicates,
			Storage: storage, Replicas: 1,
		},
	}
}

// hubSources are the sources the hub's streams take a site's reports in
// by, from its inbox: status of the site's clusters only; joins of any
// cluster there (a new cluster asks to join before the hub knows its
// site) and heartbeats of the site's own clusters.
func hubSources(s Site) map[string][]*jetstream.StreamSource {
	inbox := bus.SiteInbox(s.Name)
	var status, clusters []*jetstream.StreamSource
	clusters = append(clusters, local(inbox, bus.ClusterSubject("*", "join")))
	for _, c := range sorted(s.Clusters) {
		status = append(status, local(inbox, bus.StatusFilter(c)))
		clusters = append(clusters, local(inbox, bus.ClusterSubject(c, "heartbeat")))
	}
	return map[string][]*jetstream.StreamSource{
		bus.StreamClusters: clusters,
		bus.StreamStatus:   status,
	}
}

// ofSite says whether a source of a hub stream is one this package set up
// for site: from its inbox, or (as before inboxes) from its domain.
func ofSite(src *jetstream.StreamSource, site string) bool {
	switch {
	case src == nil:
		return false
	case src.External != nil:
		return src.External.APIPrefix == apiPrefix(site)
	default:
		return src.Name == bus.SiteInbox(site)
	}
}
