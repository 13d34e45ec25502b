package site_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/site"
)

// bed is a hub and one site whose leaf node reaches the hub only through
// a link that can be cut, on the hub's decentralized auth as in
// production: each identity logs in with the JWT pkg/creds signs it.
type bed struct {
	hub, leaf *natstest.Server
	link      *linkproxy.Proxy
	auth      *creds.Authority
	// linkCreds is the site's link's credentials file (leaf nodes only).
	linkCreds string
	hubNC     *nats.Conn
	hubJS     jetstream.JetStream
	siteNC    *nats.Conn
	siteJS    jetstream.JetStream
	sites     *site.Manager
	// dispatcherJS is the hub's JetStream as the dispatcher's user;
	// boxJS the site's account's at the hub, as the dispatcher's user
	// there.
	dispatcherJS, boxJS jetstream.JetStream
	reconnected         chan string
}

func newBed(t testing.TB, clusters ...string) *bed {
	return newBedWith(t, site.Options{}, clusters...)
}

// newBedWith is newBed with the manager's options (its sites, setup, ping
// and callback are the bed's).
func newBedWith(t testing.TB, o site.Options, clusters ...string) *bed {
	t.Helper()
	dir := t.TempDir()
	auth, err := creds.LoadOrCreate(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.AddSite("edge"); err != nil {
		t.Fatal(err)
	}
	op, sys, accounts, err := auth.Trust()
	if err != nil {
		t.Fatal(err)
	}
	hub := natstest.NewWith(t, natstest.Options{Domain: site.HubDomain, LeafNodes: true,
		Trust: &natstest.Trust{Operator: op, SystemAccount: sys, Accounts: accounts}})
	link, err := linkproxy.Listen("127.0.0.1:0", hub.LeafURL()[len("nats-leaf://"):])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })
	// The site's link with its own rights only (bus.SiteLinkPermissions).
	linkData, _, err := auth.SiteLinks("edge")
	if err != nil {
		t.Fatal(err)
	}
	linkCreds := filepath.Join(dir, "link.creds")
	if err := os.WriteFile(linkCreds, linkData, 0o600); err != nil {
		t.Fatal(err)
	}
	leaf := natstest.NewWith(t, natstest.Options{Domain: "edge", Remote: &natstest.Remote{
		URL: "nats-leaf://" + link.Addr(), Credentials: linkCreds, DenyImports: site.LinkDeny(), DenyExports: site.LinkDeny(),
	}})
	b := &bed{hub: hub, leaf: leaf, link: link, auth: auth, linkCreds: linkCreds, reconnected: make(chan string, 100)}
	admin, err := auth.User("admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	b.hubNC, b.hubJS = hub.ConnectCreds(t, admin)
	b.siteNC, b.siteJS = leaf.JetStream(t)
	ctx := t.Context()
	if err := bus.Setup(ctx, b.hubJS, bus.SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	// The dispatcher runs the sites with its own rights only: its user in
	// the services' account, and its user in each site's.
	dp := bus.DispatcherPermissions()
	dispatcher, err := auth.User("dispatcher", &dp)
	if err != nil {
		t.Fatal(err)
	}
	_, djs := hub.ConnectCreds(t, dispatcher, nats.CustomInboxPrefix(bus.DispatcherInboxPrefix))
	b.dispatcherJS = djs
	siteDispatcher, err := auth.SiteDispatcher("edge")
	if err != nil {
		t.Fatal(err)
	}
	_, b.boxJS = hub.ConnectCreds(t, siteDispatcher, nats.CustomInboxPrefix(bus.SiteInboxPrefix("edge")))
	o.Sites, o.Setup, o.Ping = []string{"edge"}, bus.SetupOptions{Memory: true}, 100*time.Millisecond
	o.Conn = func(site string) (*nats.Conn, error) {
		return hub.DialCreds(siteDispatcher, nats.CustomInboxPrefix(bus.SiteInboxPrefix(site)))
	}
	o.OnReconnect = func(s string) {
		select {
		case b.reconnected <- s:
		default:
		}
	}
	b.sites, err = site.New(djs, testLog(), o)
	if err != nil {
		t.Fatal(err)
	}
	go b.sites.Run(ctx)
	if err := b.sites.Sync(ctx, map[string][]string{"edge": clusters}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the site's link never came up")
	}
	return b
}

func (b *bed) publishWork(t testing.TB, cluster, app, body string) {
	t.Helper()
	if _, err := b.hubJS.Publish(t.Context(), bus.WorkSubject(cluster, "demo", app), []byte(body)); err != nil {
		t.Fatal(err)
	}
}

// siteWork is the newest work of an application the site holds ("" none).
func (b *bed) siteWork(ctx context.Context, cluster, app string) string {
	m, err := bus.LastBySubject(ctx, b.siteNC, bus.ClusterAPI, bus.StreamWork, bus.WorkSubject(cluster, "demo", app))
	if err != nil {
		return ""
	}
	return string(m.Data)
}

// hubStatus is every report of a cluster the hub's status stream holds.
func (b *bed) hubStatus(t testing.TB, cluster string) []string {
	t.Helper()
	st, err := b.hubJS.Stream(t.Context(), bus.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(bus.StatusFilter(cluster)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			continue
		}
		if matches(m.Subject, cluster) {
			out = append(out, string(m.Data))
		}
	}
	return out
}

func matches(subject, cluster string) bool {
	prefix := "flotilla.status." + cluster + "."
	return len(subject) > len(prefix) && subject[:len(prefix)] == prefix
}

func (b *bed) report(t testing.TB, cluster, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := b.siteJS.Publish(ctx, bus.StatusSubject(cluster, "demo", "app"), []byte(body)); err != nil {
		t.Fatalf("report at the site: %v", err)
	}
}

func TestSiteGetsItsClustersWorkAndHubItsReports(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	b.publishWork(t, "edge-1", "app", "r1")
	b.publishWork(t, "elsewhere", "app", "secret")
	eventually.True(t, 10*time.Second, "work reaches the site", func() (bool, error) { return b.siteWork(ctx, "edge-1", "app") == "r1", nil })
	b.report(t, "edge-1", "s1")
	eventually.True(t, 10*time.Second, "the report reaches the hub", func() (bool, error) { return len(b.hubStatus(t, "edge-1")) == 1, nil })
	time.Sleep(500 * time.Millisecond)
	if got := b.hubStatus(t, "edge-1"); len(got) != 1 || got[0] != "s1" {
		t.Fatalf("hub holds %q, want the one report once", got)
	}
	if got := b.siteWork(ctx, "elsewhere", "app"); got != "" {
		t.Fatalf("another cluster's work reached the site: %q", got)
	}
	// The dispatcher sets sources; it may delete no stream, at the hub or
	// in a site.
	for _, subject := range []string{
		"$JS.API.STREAM.DELETE." + bus.StreamStatus,
		"$JS." + site.HubDomain + ".API.STREAM.DELETE." + bus.StreamStatus,
		"$JS.edge.API.STREAM.DELETE." + bus.StreamWork,
	} {
		if _, err := b.dispatcherJS.Conn().Request(subject, nil, time.Second); err == nil {
			t.Fatalf("the dispatcher was answered on %s", subject)
		}
	}
	if _, err := b.siteJS.Stream(ctx, bus.StreamWork); err != nil {
		t.Fatalf("the site's work stream: %v", err)
	}
	if _, err := b.hubJS.Stream(ctx, bus.StreamStatus); err != nil {
		t.Fatalf("the hub's status stream: %v", err)
	}
}

// A cluster that leaves its site (deleted at the hub, or moved) leaves
// nothing there: its agent finds neither work nor acceptance.
func TestClusterLeavingASiteIsPurgedThere(t *testing.T) {
	b := newBed(t, "edge-1", "edge-2")
	ctx := t.Context()
	kv, err := b.hubJS.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"edge-1", "edge-2"} {
		b.publishWork(t, c, "app", "r1")
		if _, err := kv.Put(ctx, bus.AcceptedKey(c), []byte("true")); err != nil {
			t.Fatal(err)
		}
	}
	accepted := func(c string) bool { ok, err := bus.Accepted(ctx, b.siteNC, c); return err == nil && ok }
	eventually.True(t, 10*time.Second, "both clusters' work and acceptance at the site", func() (bool, error) {
		return b.siteWork(ctx, "edge-1", "app") == "r1" && b.siteWork(ctx, "edge-2", "app") == "r1" && accepted("edge-1") && accepted("edge-2"), nil
	})
	if err := b.sites.Sync(ctx, map[string][]string{"edge": {"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	if b.siteWork(ctx, "edge-2", "app") != "" || accepted("edge-2") {
		t.Fatal("a cluster no longer at the site still finds its work or acceptance there")
	}
	if b.siteWork(ctx, "edge-1", "app") != "r1" || !accepted("edge-1") {
		t.Fatal("the cluster still at the site lost its work or acceptance")
	}
}

// While the link is down the site keeps what it has and takes reports;
// once it returns the newest work reaches the site and every report the
// hub, in order, each once, quickly whatever the outage's length.
func TestSiteCatchesUpAfterAnOutage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   linkproxy.Mode
		outage time.Duration
	}{
		{"reset 3s", linkproxy.Reset, 3 * time.Second},
		{"blackhole 12s", linkproxy.Blackhole, 12 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.outage > 5*time.Second {
				t.Skip("long outage (make bench measures 3 s, 30 s and 5 min)")
			}
			b := newBed(t, "edge-1")
			ctx := t.Context()
			b.publishWork(t, "edge-1", "app", "r0")
			eventually.True(t, 10*time.Second, "work reaches the site", func() (bool, error) { return b.siteWork(ctx, "edge-1", "app") == "r0", nil })

			b.link.Down(tc.mode)
			eventually.True(t, 10*time.Second, "the hub sees the link down", func() (bool, error) { up, _, _ := b.sites.Link("edge"); return !up, nil })
			for i := 1; i <= 100; i++ {
				b.publishWork(t, "edge-1", "app", fmt.Sprintf("r%d", i))
			}
			for i := 1; i <= 5; i++ {
				b.report(t, "edge-1", fmt.Sprintf("s%d", i))
			}
			time.Sleep(tc.outage)
			if got := b.siteWork(ctx, "edge-1", "app"); got != "r0" {
				t.Fatalf("while cut off the site holds %q, want what it had (r0)", got)
			}
			b.link.Up()
			back := time.Now()
			var work, status time.Duration
			eventually.True(t, 30*time.Second, "the site and the hub converge", func() (bool, error) {
				if work == 0 && b.siteWork(ctx, "edge-1", "app") == "r100" {
					work = time.Since(back)
				}
				if status == 0 && len(b.hubStatus(t, "edge-1")) == 5 {
					status = time.Since(back)
				}
				return work > 0 && status > 0, nil
			})
			t.Logf("after a %v outage (%s): newest work at the site %v, reports at the hub %v after reconnect",
				tc.outage, tc.name, work.Round(time.Millisecond), status.Round(time.Millisecond))
			time.Sleep(500 * time.Millisecond)
			got := b.hubStatus(t, "edge-1")
			want := []string{"s1", "s2", "s3", "s4", "s5"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("hub holds reports %q, want %q in order, each once", got, want)
			}
		})
	}
}

// A cluster's credential and acceptance reach its site, and withdrawing
// the credential at the hub (a KV purge, which carries a rollup header)
// does not stall what follows: accepted again, the new credential arrives.
func TestCredentialWithdrawnAndIssuedAgainReachesTheSite(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	kv, err := b.hubJS.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	credential := func() string { c, _ := bus.Credential(ctx, b.siteNC, "edge-1"); return c }
	if _, err := kv.Put(ctx, bus.CredentialKey("edge-1"), []byte("jwt-1")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the credential at the site", func() (bool, error) { return credential() == "jwt-1", nil })
	if err := kv.Purge(ctx, bus.CredentialKey("edge-1")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the withdrawal at the site", func() (bool, error) { return credential() == "", nil })
	if _, err := kv.Put(ctx, bus.CredentialKey("edge-1"), []byte("jwt-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.AcceptedKey("edge-1"), []byte("true")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the new credential and acceptance at the site", func() (bool, error) {
		ok, err := bus.Accepted(ctx, b.siteNC, "edge-1")
		return credential() == "jwt-2" && err == nil && ok, nil
	})
}

// A cluster newly at a site gets what the hub writes for it right after:
// its sources are set up anew and what was written meanwhile still comes.
func TestNewClusterAtASiteGetsWhatFollows(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	kv, err := b.hubJS.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.sites.Sync(ctx, map[string][]string{"edge": {"edge-1", "edge-2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.CredentialKey("edge-2"), []byte("jwt-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.AcceptedKey("edge-2"), []byte("true")); err != nil {
		t.Fatal(err)
	}
	if err := b.sites.Sync(ctx, map[string][]string{"edge": {"edge-1", "edge-2"}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "edge-2's credential and acceptance at the site", func() (bool, error) {
		c, _ := bus.Credential(ctx, b.siteNC, "edge-2")
		ok, err := bus.Accepted(ctx, b.siteNC, "edge-2")
		return c == "jwt-2" && err == nil && ok, nil
	})
}

// Written while the link is down, a cluster's credential and then its
// acceptance both reach the site when it returns: each of the stream's
// sources (one per subject) resumes from its own last message.
func TestEverySourcedSubjectCatchesUp(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	kv, err := b.hubJS.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.AcceptedKey("edge-1"), []byte("false")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the acceptance at the site", func() (bool, error) {
		_, err := bus.Accepted(ctx, b.siteNC, "edge-1")
		return err == nil, nil
	})
	b.link.Down(linkproxy.Reset)
	eventually.True(t, 10*time.Second, "the hub sees the link down", func() (bool, error) { up, _, _ := b.sites.Link("edge"); return !up, nil })
	if _, err := kv.Put(ctx, bus.CredentialKey("edge-1"), []byte("jwt-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, bus.AcceptedKey("edge-1"), []byte("true")); err != nil {
		t.Fatal(err)
	}
	b.link.Up()
	eventually.True(t, 10*time.Second, "the credential and the acceptance at the site", func() (bool, error) {
		c, _ := bus.Credential(ctx, b.siteNC, "edge-1")
		ok, err := bus.Accepted(ctx, b.siteNC, "edge-1")
		return c == "jwt-1" && err == nil && ok, nil
	})
}

// A site that lies (its leaf node's credentials in another server, set up
// as the attacker likes) reaches at the hub only its own outbox and inbox:
// no other cluster's work or credentials, no stream of the hub's, no
// report or approval in another's name. The real site keeps working
// alongside.
func TestAHostileSiteReachesOnlyItsOwn(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	evil := natstest.NewWith(t, natstest.Options{Domain: "evil", Remote: &natstest.Remote{
		URL: b.hub.LeafURL(), Credentials: b.linkCreds,
	}})
	enc, _ := evil.JetStream(t)
	// What the hub sends it: nothing of the services' subjects.
	var heard []string
	var mu sync.Mutex
	for _, subject := range []string{"flotilla.>", "$KV.>", "$JS.API.>", "$JS.ACK.>", "_INBOX_dispatcher.>", "_INBOX_planner.>"} {
		if _, err := enc.Subscribe(subject, func(m *nats.Msg) { mu.Lock(); heard = append(heard, m.Subject); mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	kv, err := b.hubJS.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // its interest reaches the hub
	b.publishWork(t, "elsewhere", "app", "secret")
	b.publishWork(t, "edge-1", "app", "r1")
	if _, err := kv.Put(ctx, bus.CredentialKey("elsewhere"), []byte("a credential")); err != nil {
		t.Fatal(err)
	}
	// Through the hub's JetStream API.
	hubAPI := "$JS." + site.HubDomain + ".API"
	for _, subject := range []string{
		hubAPI + ".INFO",
		hubAPI + ".STREAM.INFO." + bus.StreamWork,
		hubAPI + ".STREAM.DELETE." + bus.StreamWork,
		hubAPI + ".STREAM.PURGE." + bus.StreamStatus,
		hubAPI + ".DIRECT.GET." + bus.StreamWork + "." + bus.WorkSubject("elsewhere", "demo", "app"),
		hubAPI + ".DIRECT.GET." + bus.KVStream(bus.BucketClusters) + "." + bus.CredentialSubject("elsewhere"),
		hubAPI + ".CONSUMER.CREATE." + bus.StreamWork + ".steal." + bus.WorkFilter("elsewhere"),
		hubAPI + ".STREAM.DELETE." + bus.SiteOutbox("edge"),
		hubAPI + ".STREAM.UPDATE." + bus.SiteOutbox("edge"),
	} {
		if m, err := enc.Request(subject, []byte(`{}`), 500*time.Millisecond); err == nil {
			t.Errorf("the hostile site was answered on %s: %s", subject, m.Data)
		}
	}
	// The site's own work aside (its deliveries carry their subjects),
	// nothing of the hub's reached it.
	eventually.True(t, 10*time.Second, "work reaches the real site", func() (bool, error) { return b.siteWork(ctx, "edge-1", "app") == "r1", nil })
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	for _, subject := range heard {
		if subject != bus.WorkSubject("edge-1", "demo", "app") {
			t.Errorf("the hostile site received %s", subject)
		}
	}
	mu.Unlock()
	// Core messages in others' names.
	for subject, data := range map[string]string{
		bus.StatusSubject("elsewhere", "demo", "app"):       "forged report",
		bus.StatusSubject("edge-1", "demo", "app"):          "around its inbox",
		bus.ApprovalSubject("demo", "app"):                  "forged approval",
		bus.ClusterSubject("elsewhere", "heartbeat"):        "forged heartbeat",
		"$KV." + bus.BucketClusters + ".elsewhere.accepted": "true",
		bus.WorkSubject("elsewhere", "demo", "app"):         "forged work",
	} {
		if err := enc.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	for _, c := range []string{"elsewhere", "edge-1"} {
		if got := b.hubStatus(t, c); len(got) > 0 {
			t.Errorf("the hub took reports of %s from the hostile site: %q", c, got)
		}
	}
	for stream, subject := range map[string]string{
		bus.StreamApprovals: bus.ApprovalSubject("demo", "app"),
		bus.StreamClusters:  bus.ClusterSubject("elsewhere", "heartbeat"),
		bus.StreamWork:      bus.WorkSubject("elsewhere", "demo", "app"),
	} {
		m, err := bus.LastBySubject(ctx, b.hubNC, bus.ServiceAPI, stream, subject)
		if err == nil && string(m.Data) != "secret" {
			t.Errorf("the hub's %s took %q from the hostile site", stream, m.Data)
		}
	}
	if e, err := kv.Get(ctx, "elsewhere.accepted"); err == nil {
		t.Errorf("the hostile site accepted a cluster: %q", e.Value())
	}
	// Its outbox holds the site's clusters' work and nothing else.
	out, err := b.boxJS.Stream(ctx, bus.SiteOutbox("edge"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := out.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	for subject := range info.State.Subjects {
		if !strings.Contains(subject, "edge-1") {
			t.Errorf("the site's outbox holds %s", subject)
		}
	}
}

// A site that lies below the level of any server (it speaks the leaf
// protocol itself, sending what no server would forward) gets nothing of
// the services' account either. JetStream acks and service replies cross
// a leaf link unchecked by its user's permissions (nats-server
// leafMsgAllowed): an ack of another cluster's agent's consumer asking for
// the next message, answered where the site listens, would hand it that
// cluster's work, and a term or ack would drop another's approvals. The
// site's link lives in the site's own account at the hub, where no
// consumer but its own outbox's is.
func TestASiteSpeakingTheLeafProtocolReachesOnlyItsOwn(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	linkData, err := os.ReadFile(b.linkCreds)
	if err != nil {
		t.Fatal(err)
	}
	liar := dialRawLeaf(t, b.hub.LeafURL()[len("nats-leaf://"):], linkData)
	steal := bus.SiteDeliverTo("edge") + ".stolen"
	reply := "$JSC.R.liar"
	for _, subject := range []string{steal, reply, bus.QueryFilter, "$JS.ACK.>", "_INBOX.>", "_R_.>"} {
		liar.sub(t, subject)
	}
	// Another cluster's agent's work consumer, with work waiting.
	if _, err := b.hubJS.CreateOrUpdateConsumer(ctx, bus.StreamWork, jetstream.ConsumerConfig{
		Durable: "agent-elsewhere", FilterSubject: bus.WorkFilter("elsewhere"), AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	b.publishWork(t, "elsewhere", "app", "secret")
	// An approval waiting for the gate, on a consumer of its own.
	if _, err := b.hubJS.Publish(ctx, bus.ApprovalSubject("demo", "app"), []byte("approve")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.hubJS.CreateOrUpdateConsumer(ctx, bus.StreamApprovals, jetstream.ConsumerConfig{
		Durable: "gate", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	liar.pub(t, "$JS.ACK."+bus.StreamWork+".agent-elsewhere.1.1.1.0.0", steal, "+NXT")
	liar.pub(t, "$JS.ACK."+bus.StreamApprovals+".gate.1.1.1.0.0", steal, "+NXT")
	liar.pub(t, "$JS.ACK."+bus.StreamApprovals+".gate.1.1.1.0.0", "", "+TERM")
	// A live read of a cluster not at the site.
	if _, err := b.hubNC.Request(bus.QuerySubject("elsewhere"), []byte(`{}`), 300*time.Millisecond); err == nil {
		t.Error("a live read of another cluster was answered")
	}
	liar.send(t, "PING\r\n")
	time.Sleep(time.Second)
	if got := liar.received(steal); len(got) > 0 {
		t.Errorf("the lying site pulled messages through acks of others' consumers: %q", got)
	}
	if got := liar.received(bus.QuerySubject("elsewhere")); len(got) > 0 {
		t.Errorf("the lying site heard a live read of another cluster: %q", got)
	}
	// A consumer of its own outbox delivering wherever it likes at the
	// hub, or one of the services' work through what its account imports
	// for its outbox's sources (the hub drops a leaf link that sends what
	// its user may not: each try on a link of its own).
	create := func(stream, name, filter, deliver string) string {
		return `{"stream_name":"` + stream + `","config":{"name":"` + name + `","filter_subject":"` + filter + `","deliver_subject":"` + deliver + `","ack_policy":"none"}}`
	}
	for subject, body := range map[string]string{
		"$JS.API.CONSUMER.CREATE." + bus.SiteOutbox("edge") + ".evil":                                          create(bus.SiteOutbox("edge"), "evil", "", steal),
		"$JS." + site.HubDomain + ".API.CONSUMER.CREATE." + bus.SiteOutbox("edge") + ".evil":                   create(bus.SiteOutbox("edge"), "evil", "", steal),
		bus.ServicesAPIPrefix + ".CONSUMER.CREATE." + bus.StreamWork + ".steal." + bus.WorkFilter("elsewhere"): create(bus.StreamWork, "steal", bus.WorkFilter("elsewhere"), bus.SiteDeliverHub("edge")+".stolen"),
	} {
		l := dialRawLeaf(t, b.hub.LeafURL()[len("nats-leaf://"):], linkData)
		l.sub(t, reply)
		l.sub(t, steal)
		l.pub(t, subject, reply, body)
		time.Sleep(300 * time.Millisecond)
		for _, got := range l.received(reply) {
			if !strings.Contains(got, `"error"`) {
				t.Errorf("the lying site made a consumer at the hub (%s): %s", subject, got)
			}
		}
		if got := l.received(steal); len(got) > 0 {
			t.Errorf("the lying site got deliveries of a consumer of its making: %q", got)
		}
	}
	if _, err := b.boxJS.Consumer(ctx, bus.SiteOutbox("edge"), "evil"); err == nil {
		t.Error("the lying site made a consumer of its outbox at the hub")
	}
	if _, err := b.hubJS.Consumer(ctx, bus.StreamWork, "steal"); err == nil {
		t.Error("the lying site made a consumer of the services' work")
	}
	cons, err := b.hubJS.Consumer(ctx, bus.StreamApprovals, "gate")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 1 || info.NumAckPending != 0 {
		t.Errorf("the gate's approvals were touched by the lying site: %d pending, %d unacked", info.NumPending, info.NumAckPending)
	}
	cons, err = b.hubJS.Consumer(ctx, bus.StreamWork, "agent-elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if info, err = cons.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 1 || info.NumAckPending != 0 {
		t.Errorf("another cluster's work consumer was touched by the lying site: %d pending, %d unacked", info.NumPending, info.NumAckPending)
	}
	// The real site kept working.
	b.publishWork(t, "edge-1", "app", "r1")
	eventually.True(t, 10*time.Second, "work reaches the real site", func() (bool, error) { return b.siteWork(ctx, "edge-1", "app") == "r1", nil })
}

// testLog is the manager's log: shown with FLOTILLA_TEST_LOG set.
func testLog() *slog.Logger {
	if os.Getenv("FLOTILLA_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// A report as large as the hub's status stream takes, once sourced, would
// be a few bytes too large there (sourcing adds a header on each hop), and
// the hub's source would stop at it for good: the site refuses it when the
// agent publishes, and what follows reaches the hub.
func TestALargeReportDoesNotHoldUpTheSite(t *testing.T) {
	b := newBed(t, "edge-1")
	ctx := t.Context()
	st, err := b.hubJS.Stream(ctx, bus.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	limit := int(st.CachedInfo().Config.MaxMsgSize)
	big := strings.Repeat("x", limit-8)
	if _, err := b.siteJS.Publish(ctx, bus.StatusSubject("edge-1", "demo", "big"), []byte(big)); err == nil {
		t.Logf("the site took a report of %d bytes (the hub's limit %d)", len(big), limit)
	}
	if _, err := b.siteJS.Publish(ctx, bus.StatusSubject("edge-1", "demo", "app"), []byte("after")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the report after reaches the hub", func() (bool, error) {
		return slices.Contains(b.hubStatus(t, "edge-1"), "after"), nil
	})
}

// A site's account at the hub holds its outbox and inbox and no third
// stream, whoever asks (its limits are in the account's JWT).
func TestASitesAccountHoldsItsTwoStreamsOnly(t *testing.T) {
	b := newBed(t, "edge-1")
	if _, err := b.boxJS.CreateStream(t.Context(), jetstream.StreamConfig{Name: "EXTRA", Subjects: []string{"extra.>"}, Storage: jetstream.MemoryStorage}); err == nil {
		t.Error("a third stream in the site's account")
	}
	names := b.boxJS.StreamNames(t.Context())
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	slices.Sort(got)
	if want := []string{bus.SiteInbox("edge"), bus.SiteOutbox("edge")}; !slices.Equal(got, want) {
		t.Errorf("the site's account holds %v, want %v", got, want)
	}
}
