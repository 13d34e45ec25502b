package site

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Options of the hub's side of its sites.
type Options struct {
	// Sites are the JetStream domains of the sites the hub serves.
	Sites []string
	// Setup sizes the site streams as the hub's (memory in tests).
	Setup bus.SetupOptions
	// Ping is how often each site's link is tried. Zero: 200ms.
	Ping time.Duration
	// OnReconnect, when set, is called (from the watch) each time a site's
	// link returns, after its sources are back: the dispatcher relays
	// acceptance again to what it could not reach.
	OnReconnect func(site string)
	// Conn is the connection to the site's own account at the hub
	// (creds.Authority.SiteDispatcher), with replies under
	// bus.SiteInboxPrefix(site): the site's outbox and inbox are kept, and
	// the site's domain asked, over it.
	Conn func(site string) (*nats.Conn, error)
	// LeaveSources, when set, does not remove and re-add the sources when
	// a link returns: the server's own retry resumes them. Only for
	// measuring that retry side by side (make bench); never in service.
	LeaveSources bool
}

// validName is a JetStream domain a site may have (it is a subject token).
var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Manager keeps the hub's sites' streams and sources, and watches their
// links. One runs in every dispatcher replica: every step is idempotent.
type Manager struct {
	hub  jetstream.JetStream
	log  *slog.Logger
	opts Options

	mu    sync.Mutex
	sites map[string]*state
}

type state struct {
	members []string
	// left are clusters no longer at the site whose copies there (work,
	// acceptance) are still to be purged.
	left  []string
	up    bool
	since time.Time
	nc    *nats.Conn
	// box is the JetStream of the site's account at the hub; js the
	// site's domain's, over the link.
	box, js jetstream.JetStream
}

// ErrUnknownSite is a site the hub does not serve.
var ErrUnknownSite = errors.New("site not served by this hub")

// New checks the sites' names and makes a manager.
func New(hub jetstream.JetStream, log *slog.Logger, opts Options) (*Manager, error) {
	if opts.Ping <= 0 {
		opts.Ping = 200 * time.Millisecond
	}
	m := &Manager{hub: hub, log: log, opts: opts, sites: map[string]*state{}}
	for _, name := range opts.Sites {
		if !validName.MatchString(name) || bus.ReservedSiteName(name) {
			return nil, fmt.Errorf("site %q: a site is named by its JetStream domain: letters, digits, '-' and '_', not %q, \"flotilla\" or SITE_…", name, HubDomain)
		}
		if opts.Conn == nil {
			m.Close()
			return nil, fmt.Errorf("site %s: no connection to its account at the hub", name)
		}
		conn, err := opts.Conn(name)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("site %s: connect: %w", name, err)
		}
		js, err := jetstream.NewWithDomain(conn, name)
		if err == nil {
			m.sites[name] = &state{nc: conn, since: time.Now()}
			m.sites[name].box, err = jetstream.New(conn)
		}
		if err != nil {
			conn.Close()
			m.Close()
			return nil, fmt.Errorf("site %s: %w", name, err)
		}
		// Down until its first answer: nothing is known of it yet.
		m.sites[name].js = js
	}
	return m, nil
}

// Close closes the sites' own connections (Options.Conn).
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sites {
		if s.nc != nil {
			s.nc.Close()
		}
	}
}

// Served says whether the hub serves a site of that name.
func (m *Manager) Served(site string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.sites[site]
	return ok
}

// JetStream is the JetStream API of a site's domain, over its link.
func (m *Manager) JetStream(site string) (jetstream.JetStream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sites[site]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSite, site)
	}
	return s.js, nil
}

// Link says whether a site's link answers, and since when it does (or
// does not).
func (m *Manager) Link(site string) (up bool, since time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sites[site]
	if !ok {
		return false, time.Time{}, false
	}
	return s.up, s.since, true
}

// Sync sets which clusters are at each site (from the ManagedClusters'
// site label) and brings the hub's sources and, where the link is up,
// the site's streams in line. A site the hub does not serve is ignored.
func (m *Manager) Sync(ctx context.Context, members map[string][]string) error {
	var changed []string
	m.mu.Lock()
	for name, s := range m.sites {
		want := sorted(members[name])
		if !slices.Equal(want, s.members) {
			for _, c := range s.members {
				if !slices.Contains(want, c) {
					s.left = append(s.left, c)
				}
			}
			s.members = want
			changed = append(changed, name)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, name := range changed {
		if err := m.apply(ctx, name, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) site(name string) (Site, *state, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sites[name]
	return Site{Name: name, Clusters: slices.Clone(s.members)}, s, s.up
}

// Conn is the connection to a site's account at the hub: where its
// clusters' agents are asked for live reads (only there: no other site,
// nor the services' account, hears them).
func (m *Manager) Conn(site string) (*nats.Conn, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sites[site]
	if !ok {
		return nil, false
	}
	return s.nc, true
}

// apply sets up a site's outbox and inbox at the hub and the outbox's
// consumers, its streams (when its link is up) and the services' sources
// of its inbox. bounce removes every source across the link first and
// adds it back: a source re-added resumes at once from where it stopped
// (the stream's own source headers), where one left alone would wait out
// the server's retry backoff. The sources within the hub never wait on
// the link: they are left as they are.
func (m *Manager) apply(ctx context.Context, name string, bounce bool) error {
	s, st, up := m.site(name)
	var errs []error
	for _, cfg := range boxes(s, m.opts.Setup) {
		if err := m.setUp(ctx, st.box, cfg, bounce && up && crossesLink(cfg, name)); err != nil {
			errs = append(errs, fmt.Errorf("site %s: hub %w", name, err))
		}
	}
	for _, c := range bus.SiteOutboxConsumers(name) {
		if _, err := st.box.CreateOrUpdatePushConsumer(ctx, bus.SiteOutbox(name), outboxConsumer(c)); err != nil {
			errs = append(errs, fmt.Errorf("site %s: hub consumer %s of its outbox: %w", name, c.Name, err))
		}
	}
	if up && len(errs) == 0 {
		for _, cfg := range siteStreams(s, m.opts.Setup) {
			if err := m.setUp(ctx, st.js, cfg, bounce && crossesLink(cfg, name)); err != nil {
				errs = append(errs, fmt.Errorf("site %s: %w", name, err))
			}
		}
	}
	if len(errs) == 0 {
		errs = append(errs, m.purgeLeft(ctx, name, st, up))
	}
	for stream, srcs := range hubSources(s) {
		if err := m.hubSource(ctx, stream, name, srcs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// crossesLink says whether a stream sources across site's link.
func crossesLink(cfg jetstream.StreamConfig, site string) bool {
	return slices.ContainsFunc(cfg.Sources, func(s *jetstream.StreamSource) bool { return overLink(s, site) })
}

// setUp creates or updates a stream, first without its sources if bounce.
func (m *Manager) setUp(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, bounce bool) error {
	if bounce {
		bare := cfg
		bare.Sources = nil
		if _, err := js.CreateOrUpdateStream(ctx, bare); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another replica, or this one's watch, created it just now.
		_, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}

// purgeLeft removes what the site's outbox at the hub, and the site when
// its link is up, hold of clusters no longer there: their agents find
// neither work nor acceptance (a cluster deleted at the hub is not
// accepted at its site either). A cluster is forgotten once both are done.
func (m *Manager) purgeLeft(ctx context.Context, name string, st *state, up bool) error {
	js := st.js
	m.mu.Lock()
	left, members := slices.Clone(m.sites[name].left), slices.Clone(m.sites[name].members)
	m.mu.Unlock()
	var done []string
	for _, c := range left {
		if slices.Contains(members, c) {
			done = append(done, c) // back at the site
			continue
		}
		subjects := []string{bus.WorkFilter(c), bus.AcceptedSubject(c), bus.CredentialSubject(c)}
		if err := purge(ctx, st.box, bus.SiteOutbox(name), subjects...); err != nil {
			return fmt.Errorf("site %s: purge cluster %s: %w", name, c, err)
		}
		if !up {
			continue
		}
		if err := purge(ctx, js, bus.StreamWork, bus.WorkFilter(c)); err != nil {
			return fmt.Errorf("site %s: purge cluster %s: %w", name, c, err)
		}
		if err := purge(ctx, js, bus.KVStream(bus.BucketClusters), bus.AcceptedSubject(c), bus.CredentialSubject(c)); err != nil {
			return fmt.Errorf("site %s: purge cluster %s: %w", name, c, err)
		}
		done = append(done, c)
	}
	m.mu.Lock()
	s := m.sites[name]
	s.left = slices.DeleteFunc(s.left, func(c string) bool { return slices.Contains(done, c) })
	m.mu.Unlock()
	return nil
}

// purge removes subjects' messages from a stream.
func purge(ctx context.Context, js jetstream.JetStream, stream string, subjects ...string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("%s: %w", stream, err)
	}
	for _, subject := range subjects {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			return fmt.Errorf("%s: %s: %w", stream, subject, err)
		}
	}
	return nil
}

// hubSource sets the sources of a hub stream that take in a site's
// messages (none: nil), leaving every other source as it is.
func (m *Manager) hubSource(ctx context.Context, stream, site string, srcs []*jetstream.StreamSource) error {
	st, err := m.hub.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("hub stream %s: %w", stream, err)
	}
	cfg := st.CachedInfo().Config
	var sources []*jetstream.StreamSource
	for _, s := range cfg.Sources {
		if !ofSite(s, site) {
			sources = append(sources, s)
		}
	}
	sources = append(sources, srcs...)
	if reflect.DeepEqual(sources, cfg.Sources) {
		return nil
	}
	cfg.Sources = sources
	if _, err := m.hub.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("hub stream %s: sources of site %s: %w", stream, site, err)
	}
	return nil
}

// Run watches every site's link until ctx ends: a site's domain answering
// again is its link back, and its sources are re-added at once.
// It closes the sites' own connections as it ends.
func (m *Manager) Run(ctx context.Context) {
	defer m.Close()
	var wg sync.WaitGroup
	m.mu.Lock()
	for name := range m.sites {
		wg.Go(func() { m.watch(ctx, name) })
	}
	m.mu.Unlock()
	wg.Wait()
}

func (m *Manager) watch(ctx context.Context, name string) {
	t := time.NewTicker(m.opts.Ping)
	defer t.Stop()
	// Hub sources are checked now and then too: a planner setting its
	// stream up again at the same moment may have written over them.
	check := time.NewTicker(30 * time.Second)
	defer check.Stop()
	pending := true // the site's streams and sources are to be (re)applied
	for {
		up := m.ping(ctx, name)
		m.mu.Lock()
		s := m.sites[name]
		was := s.up
		if up != was {
			s.up, s.since = up, time.Now()
		}
		m.mu.Unlock()
		switch {
		case up && !was:
			m.log.Info("site link up", "site", name)
			pending = true
		case !up && was:
			m.log.Warn("site link down: its clusters' reports wait in the site", "site", name)
		}
		if up && pending {
			began := time.Now()
			if err := m.apply(ctx, name, !m.opts.LeaveSources); err != nil {
				if ctx.Err() == nil {
					m.log.Warn("re-add the site's sources, retrying", "site", name, "err", err)
				}
			} else {
				pending = false
				m.log.Info("site sources re-added", "site", name, "took", time.Since(began).Round(time.Millisecond))
				if m.opts.OnReconnect != nil {
					m.opts.OnReconnect(name)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-check.C:
			if err := m.apply(ctx, name, false); err != nil && ctx.Err() == nil {
				m.log.Warn("check the site's sources", "site", name, "err", err)
			}
		}
	}
}

// ping asks the site's JetStream for its account info: an answer comes
// only over a working link.
func (m *Manager) ping(ctx context.Context, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, max(m.opts.Ping*2, 500*time.Millisecond))
	defer cancel()
	m.mu.Lock()
	nc := m.sites[name].nc
	m.mu.Unlock()
	msg, err := nc.RequestWithContext(ctx, apiPrefix(name)+".INFO", nil)
	return err == nil && msg.Header.Get("Status") == ""
}
