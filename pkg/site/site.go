// Package site owns air-gapped sites: a site is a NATS leaf node with its
// own JetStream domain, where a few clusters' agents connect. It owns the
// site's streams (its clusters' work and acceptance sourced from the hub,
// their reports and heartbeats kept there), the sources through which the
// hub's status and clusters streams take those reports in, and the watch of
// each site's link that re-adds both directions' sources the moment the
// link returns: the server's own source retry backs off for tens of seconds
// after a long outage, and nothing else brings catch-up under a second.
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
const HubDomain = "hub"

// Site is one site: its JetStream domain and the clusters there.
type Site struct {
	Name     string
	Clusters []string
}

// LinkDeny are the subjects a site's link never carries, in either
// direction: reports and heartbeats reach the hub only through the
// sources this package sets up (in order, each once), never also as core
// messages that the hub's streams would capture a second time; and no
// other cluster's reports reach a site.
func LinkDeny() []string {
	return []string{bus.StatusAll, bus.ClustersAll}
}

// apiPrefix is the JetStream API of a domain, as seen from another.
func apiPrefix(domain string) string { return "$JS." + domain + ".API" }

// placeholder is the subject of a stream that holds only sourced messages:
// a stream must have subjects or sources, and its sources come and go.
// Nothing publishes there (the site's users may not).
func placeholder(stream string) string { return "flotilla.site-local." + stream }

// sources take stream's messages on subjects from another domain, one
// source per subject: a source with a single filter asks for its consumer
// on a subject that names the filter, which the other side's permissions
// can allow for exactly that filter.
func sources(stream, domain string, subjects []string) []*jetstream.StreamSource {
	out := make([]*jetstream.StreamSource, 0, len(subjects))
	for _, s := range subjects {
		out = append(out, &jetstream.StreamSource{Name: stream, FilterSubject: s, External: &jetstream.ExternalStream{APIPrefix: apiPrefix(domain)}})
	}
	return out
}

// oneSource takes stream's messages on all of subjects from another
// domain by one source: a stream's sources are set up again whenever
// their list changes, and a cluster's acceptance and credential, written
// one right after the other, must come in the same order through the
// same consumer (two sources of one stream could take the later first and
// resume past the earlier).
func oneSource(stream, domain string, subjects []string) []*jetstream.StreamSource {
	src := &jetstream.StreamSource{Name: stream, External: &jetstream.ExternalStream{APIPrefix: apiPrefix(domain)}}
	for _, s := range subjects {
		src.SubjectTransforms = append(src.SubjectTransforms, jetstream.SubjectTransformConfig{Source: s, Destination: s})
	}
	return []*jetstream.StreamSource{src}
}

func sorted(cs []string) []string {
	out := slices.Clone(cs)
	sort.Strings(out)
	return slices.Compact(out)
}

// siteStreams are the streams of a site's own domain. Work and acceptance
// come from the hub, filtered to the site's clusters; reports and
// heartbeats are published there by the agents (whose publish is acked by
// the site, link or no link) and taken in by the hub.
func siteStreams(s Site, o bus.SetupOptions) []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	var work, accepted, status []string
	for _, c := range sorted(s.Clusters) {
		work = append(work, bus.WorkFilter(c))
		// Its acceptance and the credential the hub signed it: an agent
		// at the site joins there as at the hub.
		accepted = append(accepted, bus.AcceptedSubject(c), bus.CredentialSubject(c))
		status = append(status, bus.StatusFilter(c))
	}
	hubWork := bus.StreamConfig(bus.StreamWork, o)
	hubStatus := bus.StreamConfig(bus.StreamStatus, o)
	hubClusters := bus.StreamConfig(bus.StreamClusters, o)
	source := func(stream string, subjects []string) []*jetstream.StreamSource {
		if len(subjects) == 0 {
			return nil
		}
		return sources(stream, HubDomain, subjects)
	}
	if len(status) == 0 {
		status = []string{placeholder(bus.StreamStatus)}
	}
	var kvSources []*jetstream.StreamSource
	if len(accepted) > 0 {
		kvSources = oneSource(bus.KVStream(bus.BucketClusters), HubDomain, accepted)
	}
	return []jetstream.StreamConfig{
		{
			Name: bus.StreamWork, Description: "the site's clusters' work, sourced from the hub: last value per subject",
			Subjects: []string{placeholder(bus.StreamWork)}, Sources: source(bus.StreamWork, work),
			MaxMsgsPerSubject: 1, MaxBytes: hubWork.MaxBytes, MaxMsgSize: hubWork.MaxMsgSize,
			AllowDirect: true, Storage: storage, Replicas: 1,
		},
		{
			Name: bus.KVStream(bus.BucketClusters), Description: "the site's clusters' acceptance and credentials, sourced from the hub",
			Subjects: []string{placeholder(bus.KVStream(bus.BucketClusters))}, Sources: kvSources,
			MaxMsgsPerSubject: 1, MaxBytes: 1 << 20, AllowDirect: true, Storage: storage, Replicas: 1,
		},
		{
			Name: bus.StreamStatus, Description: "the site's clusters' reports, kept while the link is down; the hub sources them",
			Subjects: status, MaxAge: hubStatus.MaxAge, MaxBytes: hubStatus.MaxBytes, MaxMsgSize: hubStatus.MaxMsgSize,
			MaxMsgsPerSubject: hubStatus.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubStatus.Duplicates,
			Storage: storage, Replicas: 1,
		},
		{
			// Every join at the site lands here, of clusters the hub does
			// not know yet too: the hub takes in the joins of all and the
			// heartbeats of its clusters there.
			Name: bus.StreamClusters, Description: "joins and heartbeats of the site's agents, kept while the link is down; the hub sources them",
			Subjects: []string{bus.ClustersAll}, MaxAge: hubClusters.MaxAge, MaxBytes: hubClusters.MaxBytes, MaxMsgSize: hubClusters.MaxMsgSize,
			MaxMsgsPerSubject: hubClusters.MaxMsgsPerSubject, Discard: jetstream.DiscardOld, Duplicates: hubClusters.Duplicates,
			Storage: storage, Replicas: 1,
		},
	}
}

// hubSources are the sources the hub's streams take a site's reports in
// by: status of the site's clusters only; joins of any cluster there (a
// new cluster asks to join before the hub knows its site) and heartbeats
// of the site's own clusters.
func hubSources(s Site) map[string][]*jetstream.StreamSource {
	var status, clusters []string
	clusters = append(clusters, bus.ClusterSubject("*", "join"))
	for _, c := range sorted(s.Clusters) {
		status = append(status, bus.StatusFilter(c))
		clusters = append(clusters, bus.ClusterSubject(c, "heartbeat"))
	}
	return map[string][]*jetstream.StreamSource{
		bus.StreamClusters: sources(bus.StreamClusters, s.Name, clusters),
		bus.StreamStatus:   sources(bus.StreamStatus, s.Name, status),
	}
}

// ofSite says whether a source is one this package set up for site.
func ofSite(src *jetstream.StreamSource, site string) bool {
	return src != nil && src.External != nil && src.External.APIPrefix == apiPrefix(site)
}
