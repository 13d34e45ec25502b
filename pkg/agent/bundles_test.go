package agent_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/agent"
	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/seal"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
)

// offlineAgent is an agent of c1 that is not running (no consumer, no
// heartbeats): what it applies comes only from the bundles it is given,
// as at a site with no link.
func offlineAgent(t *testing.T, dir string) (*agent.Agent, nkeys.KeyPair) {
	t.Helper()
	clients, err := hub.NewClients(env.Cluster("c1").Config)
	if err != nil {
		t.Fatal(err)
	}
	key, err := workSealer.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateUser()
	a, err := agent.New(clients, nc, js, testLogger().With("service", "offline-agent"), agent.Options{Cluster: "c1", HubWorkKeys: []string{key}, BundleDir: dir, Key: kp})
	if err != nil {
		t.Fatal(err)
	}
	return a, kp
}

// sealedWork is the hub's work of release rev for cluster, sealed by s,
// never sent over NATS.
func (f *fixture) sealedWork(rev int64, cluster string, s *seal.Sealer, manifests ...string) bundle.Message {
	f.t.Helper()
	objs := f.objects(manifests...)
	digest, err := snapshot.Digest(objs)
	if err != nil {
		f.t.Fatal(err)
	}
	w := &events.WorkData{AppRef: f.ref(rev), Cluster: cluster, Step: "deploy", Snapshot: &events.Snapshot{Digest: digest, Objects: objs}}
	e := events.New(events.WorkID(f.ref(rev), "deploy", cluster), events.SourceDispatcher, events.TypeWork, f.ns+"/demo", w)
	msg, err := events.Encode(bus.WorkSubject(cluster, f.ns, "demo"), e)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := s.Seal(msg); err != nil {
		f.t.Fatal(err)
	}
	return bundle.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data}
}

func writeBundle(t *testing.T, dir, name string, b *bundle.Bundle) string {
	t.Helper()
	var buf bytes.Buffer
	if err := b.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".bundle")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Oldest first: each file a little older than the next.
	at := time.Now().Add(time.Duration(len(name)) * time.Millisecond)
	_ = os.Chtimes(path, at, at)
	return path
}

func newBundle(t *testing.T, cluster string, msgs ...bundle.Message) *bundle.Bundle {
	t.Helper()
	b, err := bundle.New(cluster, time.Now(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// importOne imports dir's one bundle and returns what became of it.
func importOne(t *testing.T, a *agent.Agent, dir string) agent.BundleResult {
	t.Helper()
	rs := a.ImportBundles(t.Context(), dir)
	if len(rs) != 1 {
		t.Fatalf("%d bundles imported, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// Hand-carried bundles: the hub's sealed work applies as over NATS; a
// bundle altered in any way, sealed by another key, for another cluster,
// or older than what the cluster has is refused with its reason beside
// it, and nothing of it applied.
func TestBundles(t *testing.T) {
	f := newFixture(t, "bundled")
	dir := t.TempDir()
	a, key := offlineAgent(t, dir)
	color := func() string {
		cm, err := f.get("c1", "v1", "configmaps", "settings")
		if err != nil {
			return ""
		}
		c, _, _ := unstructuredString(cm.Object, "data", "color")
		return c
	}
	cm := func(c string) string { return strings.Replace(configMap, "red", c, 1) }

	// Release 2, carried by hand: applied, and its report goes out.
	writeBundle(t, dir, "r2", newBundle(t, "c1", f.sealedWork(2, "c1", workSealer, cm("blue"))))
	if r := importOne(t, a, dir); !r.Applied || filepath.Base(filepath.Dir(r.File)) != agent.BundlesApplied {
		t.Fatalf("release 2's bundle: %+v", r)
	}
	if got := color(); got != "blue" {
		t.Fatalf("after release 2's bundle the ConfigMap says %q, want blue", got)
	}
	f.waitReport("c1", "release 2 applied from the bundle", func(d *events.ClusterStatusData) bool {
		return d.Revision == 2 && d.Phase == events.ClusterApplied
	})
	// Its status bundle, to carry back: the report, signed with its key.
	if err := a.WriteStatusBundle(dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, agent.Outbox, agent.StatusBundle))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bundle.DecodeStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	if err := sb.Verify(pub); err != nil {
		t.Fatal(err)
	}
	var reported bool
	for _, m := range sb.Messages {
		if e, err := events.Decode(m.Msg()); err == nil {
			if d, ok := e.Data.(*events.ClusterStatusData); ok && d.Revision == 2 && d.Phase == events.ClusterApplied {
				reported = true
			}
		}
	}
	if !reported {
		t.Errorf("the status bundle holds no report of release 2: %d messages", len(sb.Messages))
	}

	kp, _ := nkeys.CreateAccount()
	seed, _ := kp.Seed()
	stranger, err := seal.NewSealer(seed)
	if err != nil {
		t.Fatal(err)
	}
	// Data altered, the file's digest made to match: the seal catches it.
	altered := f.sealedWork(3, "c1", workSealer, cm("green"))
	altered.Data = bytes.Replace(altered.Data, []byte("green"), []byte("black"), 1)
	// A file damaged in transit: its digest no longer matches.
	damaged := newBundle(t, "c1", f.sealedWork(3, "c1", workSealer, cm("green")))
	damaged.Messages[0].Data = bytes.Replace(damaged.Messages[0].Data, []byte("green"), []byte("black"), 1)
	// Sealed for c2, relabelled for c1.
	forC2 := f.sealedWork(3, "c2", workSealer, cm("green"))
	forC2.Subject = bus.WorkSubject("c1", f.ns, "demo")
	cases := []struct {
		name string
		b    *bundle.Bundle
		want string
	}{
		{"altered", newBundle(t, "c1", altered), "refused, nothing applied"},
		{"damaged", damaged, "damaged or altered"},
		{"by another key", newBundle(t, "c1", f.sealedWork(3, "c1", stranger, cm("green"))), "refused, nothing applied"},
		{"for another cluster", newBundle(t, "c1", forC2), "is not for cluster c1"},
		{"older than what is applied", newBundle(t, "c1", f.sealedWork(1, "c1", workSealer, cm("green"))), "older than demo-v2"},
		{"not for this cluster", newBundle(t, "c2", f.sealedWork(3, "c2", workSealer, cm("green"))), "bundle for cluster c2, this is c1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeBundle(t, dir, strings.ReplaceAll(tc.name, " ", "-"), tc.b)
			r := importOne(t, a, dir)
			if r.Applied || r.Retry || r.Err == nil || !strings.Contains(r.Err.Error(), tc.want) {
				t.Fatalf("result %+v, want refused with %q", r, tc.want)
			}
			if filepath.Base(filepath.Dir(r.File)) != agent.BundlesRefused {
				t.Errorf("the refused bundle is at %s, not in %s/", r.File, agent.BundlesRefused)
			}
			reason, err := os.ReadFile(strings.TrimSuffix(r.File, ".bundle") + ".reason")
			if err != nil || !strings.Contains(string(reason), tc.want) {
				t.Errorf("reason beside it: %q (%v), want %q", reason, err, tc.want)
			}
			if got := color(); got != "blue" {
				t.Fatalf("a refused bundle changed the cluster: the ConfigMap says %q", got)
			}
		})
	}

	// The link returns with release 3 over NATS; exported from the hub's
	// stream, it is the same work, and a restarted agent (its memory
	// empty) takes it but refuses release 2's bundle as older.
	f.work(3, "c1", &events.Snapshot{Digest: mustDigest(t, f.objects(cm("purple"))), Objects: f.objects(cm("purple"))})
	f.eventually("release 3 applied over NATS", func() (bool, error) { return color() == "purple", nil })
	exported, err := bundle.Export(f.ctx, js, "c1", []string{f.ns + "/demo"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	restarted, _ := offlineAgent(t, dir)
	writeBundle(t, dir, "stale-after-restart", newBundle(t, "c1", f.sealedWork(2, "c1", workSealer, cm("blue"))))
	if r := importOne(t, restarted, dir); r.Applied || r.Err == nil || !strings.Contains(r.Err.Error(), "older than demo-v3") {
		t.Fatalf("release 2's bundle after release 3 over NATS: %+v", r)
	}
	writeBundle(t, dir, "exported", exported)
	if r := importOne(t, restarted, dir); !r.Applied {
		t.Fatalf("the exported bundle of release 3: %+v", r)
	}
	if got := color(); got != "purple" {
		t.Fatalf("after the exported bundle the ConfigMap says %q", got)
	}

	// The site's NATS loses its copy (a leaf node set up anew) and the
	// agent restarts: the cluster itself records release 3 as applied
	// (its inventory), so release 2's bundle is still refused.
	st, err := js.Stream(f.ctx, bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(f.ctx, jetstream.WithPurgeSubject(bus.WorkSubject("c1", f.ns, "demo"))); err != nil {
		t.Fatal(err)
	}
	again, _ := offlineAgent(t, dir)
	writeBundle(t, dir, "stale-after-reset", newBundle(t, "c1", f.sealedWork(2, "c1", workSealer, cm("blue"))))
	if r := importOne(t, again, dir); r.Applied || r.Err == nil || !strings.Contains(r.Err.Error(), "which the cluster has") {
		t.Fatalf("release 2's bundle with no memory and no NATS copy of release 3: %+v", r)
	}
	// One bundle whose messages go back in time: refused whole.
	writeBundle(t, dir, "out-of-order", newBundle(t, "c1", f.sealedWork(5, "c1", workSealer, cm("green")), f.sealedWork(4, "c1", workSealer, cm("black"))))
	if r := importOne(t, again, dir); r.Applied || r.Err == nil || !strings.Contains(r.Err.Error(), "a bundle is in order") {
		t.Fatalf("a bundle out of order: %+v", r)
	}
	if got := color(); got != "purple" {
		t.Fatalf("refused bundles changed the cluster: the ConfigMap says %q", got)
	}
}

func mustDigest(t *testing.T, objs []json.RawMessage) string {
	t.Helper()
	d, err := snapshot.Digest(objs)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}
