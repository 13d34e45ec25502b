// Package site owns air-gapped sites: a site is a NATS leaf node with its
// own JetStream domain, where a few clusters' agents connect, linked into
// an account of its own at the hub (bus/sites.go says why). It owns each
// site's two streams in that account (its outbox, sourcing from the
// services' streams exactly its clusters' work and acceptance, with the
// durable consumers the site sources it by; its inbox, taking in whatever
// the site sends), the site's own streams (work and acceptance sourced
// from its outbox, reports and heartbeats kept there), the sources
// through which the services' status and clusters streams take from the
// inbox only what the site's clusters may say, and the watch of each
// site's link that re-adds the sources across it the moment the link
// returns: the server's own source retry backs off for tens of seconds
// after a long outage, and nothing else brings catch-up under a second.
package site

import (
	"slices"
	"sort"
	"time"

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

// across is a source of a stream in another domain or account (api: its
// JetStream API as seen from here), delivered under prefix (its own per
// site and direction: the link's user may deliver to, or receive, only its
// own site's), filtered to subjects by one source (a cluster's subjects
// come in the order they were written). A source new to its stream starts
// at the origin's first message (the server's default would start at the
// stream's newest message's time and miss what a cluster joining a site
// already has).
func across(stream, api, prefix string, subjects ...string) *jetstream.StreamSource {
	src := filtered(&jetstream.StreamSource{Name: stream, OptStartSeq: 1}, subjects)
	src.External = &jetstream.ExternalStream{APIPrefix: api, DeliverPrefix: prefix}
	return src
}

// durable is a source of the site's outbox at the hub by the durable
// consumer the dispatcher made for it: all the site may do at the hub is
// reset it to where it stands (it makes no consumer there, so it chooses
// no delivery subject).
func durable(outbox string, c bus.SiteConsumer) *jetstream.StreamSource {
	// The consumer filters (a durable source may not).
	return &jetstream.StreamSource{Name: outbox,
		External: &jetstream.ExternalStream{APIPrefix: apiPrefix(HubDomain)},
		Consumer: &jetstream.StreamConsumerSource{Name: c.Name, DeliverSubject: c.DeliverTo}}
}

// outboxConsumer is the durable consumer of a site's outbox that one of
// the site's streams sources by: flow-controlled, acknowledged by its flow
// control (what durable sourcing requires), from the outbox's first
// message.
func outboxConsumer(c bus.SiteConsumer) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Durable: c.Name, Description: "what the site's " + c.Stream + " sources",
		FilterSubject: c.Filter, DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckFlowControlPolicy,
		MaxAckPending: 10_000, FlowControl: true, IdleHeartbeat: time.Second, DeliverSubject: c.DeliverTo}
}

// filtered sets a source's filter to subjects: one filter, or one
// transform per subject.
func filtered(src *jetstream.StreamSource, subjects []string) *jetstream.StreamSource {
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
	outbox, cons := bus.SiteOutbox(s.Name), bus.SiteOutboxConsumers(s.Name)
	return []jetstream.StreamConfig{
		{
			// No message size of its own, as the outbox: a sourced
			// message carries a header more than the hub's did, and one
			// refused would hold up every message after it. The hub's
			// stream bounds what is written.
			Name: bus.StreamWork, Description: "the site's clusters' work, sourced from the site's outbox at the hub: last value per subject",
			Subjects:          []string{placeholder(bus.StreamWork)},
			Sources:           []*jetstream.StreamSource{durable(outbox, cons[0])},
			MaxMsgsPerSubject: 1, MaxBytes: hubWork.MaxBytes,
			AllowDirect: true, Storage: storage, Replicas: 1,
		},
		{
			// Its acceptance and the credential the hub signed it: an
			// agent at the site joins there as at the hub.
			Name: bus.KVStream(bus.BucketClusters), Description: "the site's clusters' acceptance and credentials, sourced from the site's outbox at the hub",
			Subjects:          []string{placeholder(bus.KVStream(bus.BucketClusters))},
			Sources:           []*jetstream.StreamSource{durable(outbox, cons[1])},
			MaxMsgsPerSubject: 1, MaxBytes: 1 << 20, AllowDirect: true, Storage: storage, Replicas: 1,
		},
		{
			Name: bus.StreamStatus, Description: "the site's clusters' reports, kept while the link is down; the hub's inbox of the site sources them",
			Subjects: status, MaxAge: hubStatus.MaxAge, MaxBytes: hubStatus.MaxBytes, MaxMsgSize: headroom(hubStatus.MaxMsgSize),
			MaxMsgsPerSubject: hubStatus.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubStatus.Duplicates,
			Storage: storage, Replicas: 1,
		},
		{
			// Every join at the site lands here, of clusters the hub does
			// not know yet too: the hub takes in the joins of all and the
			// heartbeats of its clusters there.
			Name: bus.StreamClusters, Description: "joins and heartbeats of the site's agents, kept while the link is down; the hub's inbox of the site sources them",
			Subjects: []string{bus.ClustersAll}, MaxAge: hubClusters.MaxAge, MaxBytes: hubClusters.MaxBytes, MaxMsgSize: headroom(hubClusters.MaxMsgSize),
			MaxMsgsPerSubject: hubClusters.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubClusters.Duplicates,
			Storage: storage, Replicas: 1,
		},
	}
}

// sourceHeaders is what sourcing adds to a message on each hop (the
// Nats-Stream-Source header naming origin, sequence and filter), with
// room to spare.
const sourceHeaders = 4 << 10

// headroom is the largest message a site may store that still fits a hub
// stream of limit once sourced there: one the hub refused would hold up
// every message of the site's after it.
func headroom(limit int32) int32 {
	if limit <= sourceHeaders {
		return limit
	}
	return limit - sourceHeaders
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
	hub := bus.SiteDeliverHub(s.Name)
	for _, c := range sorted(s.Clusters) {
		out = append(out,
			across(bus.StreamWork, bus.ServicesAPIPrefix, hub+".work", bus.WorkFilter(c)),
			across(bus.KVStream(bus.BucketClusters), bus.ServicesAPIPrefix, hub+".kv", bus.AcceptedSubject(c), bus.CredentialSubject(c)))
	}
	hubWork := bus.StreamConfig(bus.StreamWork, o)
	hubStatus := bus.StreamConfig(bus.StreamStatus, o)
	hubClusters := bus.StreamConfig(bus.StreamClusters, o)
	from := bus.SiteDeliverFrom(s.Name)
	return []jetstream.StreamConfig{
		{
			Name: bus.SiteOutbox(s.Name), Description: "what site " + s.Name + "'s clusters are to get: their work, acceptance and credentials",
			Subjects: []string{placeholder(bus.SiteOutbox(s.Name))}, Sources: out,
			// No message size of its own: see the site's work stream.
			MaxMsgsPerSubject: 1, MaxBytes: hubWork.MaxBytes, Storage: storage, Replicas: 1,
		},
		{
			Name: bus.SiteInbox(s.Name), Description: "what site " + s.Name + " sends: its clusters' reports, joins and heartbeats",
			Subjects: []string{placeholder(bus.SiteInbox(s.Name))},
			Sources: []*jetstream.StreamSource{
				across(bus.StreamStatus, apiPrefix(s.Name), from+".status"),
				across(bus.StreamClusters, apiPrefix(s.Name), from+".clusters"),
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
	inbox, api, in := bus.SiteInbox(s.Name), bus.SiteAccountAPIPrefix(s.Name), bus.SiteDeliverIn(s.Name)
	var status, clusters []*jetstream.StreamSource
	clusters = append(clusters, across(inbox, api, in+".clusters", bus.ClusterSubject("*", "join")))
	for _, c := range sorted(s.Clusters) {
		status = append(status, across(inbox, api, in+".status", bus.StatusFilter(c)))
		clusters = append(clusters, across(inbox, api, in+".clusters", bus.ClusterSubject(c, "heartbeat")))
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
		return src.External.APIPrefix == bus.SiteAccountAPIPrefix(site) || src.External.APIPrefix == apiPrefix(site)
	default:
		return src.Name == bus.SiteInbox(site)
	}
}

// overLink says whether a source crosses site's link (to or from its
// domain), rather than between accounts at the hub.
func overLink(src *jetstream.StreamSource, site string) bool {
	return src.External != nil && (src.External.APIPrefix == apiPrefix(site) || src.External.APIPrefix == apiPrefix(HubDomain))
}
