package dispatcher

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
)

func configMap(name string, data string) json.RawMessage {
	raw, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name}, "data": map[string]any{"k": data},
	})
	return raw
}

func inline(t *testing.T, objects ...json.RawMessage) *events.Snapshot {
	t.Helper()
	digest, err := snapshot.Digest(objects)
	if err != nil {
		t.Fatal(err)
	}
	return &events.Snapshot{Digest: digest, Objects: objects}
}

// kept stores objects as release rev's snapshot, as the planner does, and
// returns what its step event carries (by name, when over InlineLimit).
func (f *fixture) kept(ns, app string, rev int64, objects ...json.RawMessage) (*events.Snapshot, []json.RawMessage) {
	f.t.Helper()
	store, err := bus.Snapshots(f.ctx, f.js)
	if err != nil {
		f.t.Fatal(err)
	}
	ref, err := snapshot.Put(f.ctx, store, ns, app, rev, objects)
	if err != nil {
		f.t.Fatal(err)
	}
	s, err := snapshot.ForStep(f.ctx, store, ref)
	if err != nil {
		f.t.Fatal(err)
	}
	if s.ObjectStore == "" {
		f.t.Fatalf("a %d-byte snapshot travels inline: the test needs one over %d bytes", ref.Size, snapshot.InlineLimit)
	}
	return s, objects
}

// compressible is a ConfigMap of about size bytes that gzip shrinks a lot
// (as dashboards and manifests do).
func compressible(name string, size int) json.RawMessage {
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, `{"id":%d,"title":"CPU of node %d","expr":"rate(node_cpu_seconds_total[5m])"}`+"\n", i, i%50)
	}
	return configMap(name, b.String())
}

// incompressible is a ConfigMap of about size bytes that gzip cannot shrink much.
func incompressible(name string, size int) json.RawMessage {
	raw := make([]byte, size*3/4)
	_, _ = rand.Read(raw)
	return configMap(name, base64.StdEncoding.EncodeToString(raw))
}

// A topology policy's namespace reaches each cluster's work as its target
// namespace; work without one has none.
func TestWorkCarriesTheTopologyNamespace(t *testing.T) {
	f := start(t, Options{AutoAccept: true}, natstest.Options{})
	f.join("ns-c1")
	f.join("ns-c2")
	f.create(grantv1alpha1.ScopeGrantResource, map[string]any{
		"apiVersion": grantv1alpha1.GroupVersion.String(), "kind": "ScopeGrant", "metadata": map[string]any{"name": "shop-prod"},
		"spec": map[string]any{"namespaces": []any{"shop"}, "targetNamespaces": []any{"shop-prod"}}})
	snap := inline(t, configMap("settings", "v"))
	ref := f.deploy("shop", "web", 1, snap, topology(`{"clusters":["ns-c1","ns-c2"],"namespace":"shop-prod"}`))
	if d := f.dispatched(ref); !slices.Equal(d.Clusters, []string{"ns-c1", "ns-c2"}) || d.Reason != "" {
		t.Fatalf("dispatched %+v, want to ns-c1 and ns-c2", d)
	}
	for _, c := range []string{"ns-c1", "ns-c2"} {
		w := f.work(c, "shop", "web")
		if w.TargetNamespace != "shop-prod" || w.Cluster != c || w.Release != "web-v1" || w.Snapshot.Digest != snap.Digest {
			t.Errorf("work for %s: target namespace %q, cluster %s, release %s, digest %s; want shop-prod, %s, web-v1, %s",
				c, w.TargetNamespace, w.Cluster, w.Release, w.Snapshot.Digest, c, snap.Digest)
		}
	}
	plain := f.deploy("shop", "api", 1, snap, topology(`{"clusters":["ns-c1"]}`))
	f.dispatched(plain)
	if w := f.work("ns-c1", "shop", "api"); w.TargetNamespace != "" {
		t.Errorf("work without a topology namespace targets %q", w.TargetNamespace)
	}
}

// A step delivered to the dispatcher again long after it sent the step's
// work (past both streams' duplicate windows, shortened here to 300 ms: a
// dispatcher killed before its ack and down for longer, or a planner
// sending its outbox again) sends that work no second time: the cluster's
// newest work is already it, and its agent would apply it again. (Before,
// the work went out again with a new sequence.)
func TestAStepDeliveredAgainLongAfterSendsNoWorkTwice(t *testing.T) {
	f := start(t, Options{AutoAccept: true}, natstest.Options{})
	f.join("again-c1")
	snap := inline(t, configMap("settings", "v"))
	ref := f.deploy("again", "web", 1, snap, topology(`{"clusters":["again-c1"]}`))
	f.dispatched(ref)
	work, err := f.js.Stream(f.ctx, bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	first, err := work.GetLastMsgForSubject(f.ctx, bus.WorkSubject("again-c1", "again", "web"))
	if err != nil {
		t.Fatal(err)
	}
	natstest.ForgetDuplicatesAfter(t, f.ctx, f.js, 300*time.Millisecond, bus.StreamSteps, bus.StreamWork)
	step := &events.StepData{AppRef: ref, Step: "deploy", StepType: "deploy", Policies: []events.Policy{topology(`{"clusters":["again-c1"]}`)}, Snapshot: snap}
	e := events.New(events.StepEventID(ref, "deploy", events.TypeStepStarted), events.SourcePlanner, events.TypeStepStarted, "again/web", step)
	ack, err := bus.Publish(f.ctx, f.js, bus.StepSubject("again", "web"), e)
	if err != nil || ack.Duplicate {
		t.Fatalf("the step again: %+v, %v; want it stored anew", ack, err)
	}
	eventually.True(t, 30*time.Second, "the dispatcher took the step again", func() (bool, error) {
		c, err := f.js.Consumer(f.ctx, bus.StreamSteps, bus.ConsumerDispatcher)
		if err != nil {
			return false, err
		}
		info, err := c.Info(f.ctx)
		if err != nil {
			return false, err
		}
		return info.AckFloor.Stream >= ack.Sequence, fmt.Errorf("ack floor %d", info.AckFloor.Stream)
	})
	now, err := work.GetLastMsgForSubject(f.ctx, bus.WorkSubject("again-c1", "again", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if now.Sequence != first.Sequence {
		t.Errorf("the work went out again (sequence %d, was %d)", now.Sequence, first.Sequence)
	}
}

// A snapshot too large for a step event (kept in the object store) reaches
// the agents, which may not read the store, gzip-compressed inside the work
// message, when it fits under the limit the NATS server's max_payload sets;
// one that does not fit stays by name, with a warning.
func TestLargeSnapshotsInWork(t *testing.T) {
	t.Run("compressed inside work", func(t *testing.T) {
		f := start(t, Options{AutoAccept: true}, natstest.Options{})
		f.join("gz-c1")
		snap, objects := f.kept("big", "dashboards", 1, compressible("panels", 800<<10))
		ref := f.deploy("big", "dashboards", 1, snap, topology(`{"clusters":["gz-c1"]}`))
		if d := f.dispatched(ref); !slices.Equal(d.Clusters, []string{"gz-c1"}) {
			t.Fatalf("dispatched %+v", d)
		}
		w := f.work("gz-c1", "big", "dashboards")
		if len(w.Snapshot.Gzip) == 0 || w.Snapshot.ObjectStore != "" || len(w.Snapshot.Objects) != 0 {
			t.Fatalf("work snapshot: %d gzip bytes, object store %q, %d objects inline; want it compressed inside",
				len(w.Snapshot.Gzip), w.Snapshot.ObjectStore, len(w.Snapshot.Objects))
		}
		// An agent opens it without the object store.
		got, err := snapshot.Open(f.ctx, nil, w.Snapshot)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || string(got[0]) != string(objects[0]) {
			t.Errorf("the compressed snapshot opens to %d objects, not the one kept", len(got))
		}
		if f.logged("too large to send compressed") {
			t.Error("warned about a snapshot that was sent compressed")
		}
	})

	// A server whose max_payload is 256 KiB: the limit falls to 128 KiB of gzip.
	const maxPayload = 256 << 10
	limit := snapshot.GzipLimitFor(maxPayload)
	t.Run("over the limit of a small max_payload", func(t *testing.T) {
		f := start(t, Options{AutoAccept: true}, natstest.Options{MaxPayload: maxPayload})
		f.join("small-c1")
		// Compressed to far below the limit: still inside the work.
		fits, _ := f.kept("small", "fits", 1, compressible("panels", 600<<10))
		f.dispatched(f.deploy("small", "fits", 1, fits, topology(`{"clusters":["small-c1"]}`)))
		if w := f.work("small-c1", "small", "fits"); len(w.Snapshot.Gzip) == 0 || len(w.Snapshot.Gzip) > limit {
			t.Errorf("a snapshot compressing below %d bytes travels as %d gzip bytes, object store %q", limit, len(w.Snapshot.Gzip), w.Snapshot.ObjectStore)
		}
		// Random data compresses to far above it: by name, and said so.
		over, objects := f.kept("small", "blob", 1, incompressible("blob", 600<<10))
		if gz, err := snapshot.Gzip(mustArray(t, objects)); err != nil || len(gz) <= limit {
			t.Fatalf("the incompressible snapshot compresses to %d bytes (%v): the test needs over %d", len(gz), err, limit)
		}
		ref := f.deploy("small", "blob", 1, over, topology(`{"clusters":["small-c1"]}`))
		if d := f.dispatched(ref); !slices.Equal(d.Clusters, []string{"small-c1"}) {
			t.Fatalf("dispatched %+v, want to small-c1", d)
		}
		w := f.work("small-c1", "small", "blob")
		if w.Snapshot.ObjectStore != over.ObjectStore || w.Snapshot.Digest != over.Digest || len(w.Snapshot.Gzip) != 0 {
			t.Errorf("work snapshot: object store %q, digest %s, %d gzip bytes; want by name %q", w.Snapshot.ObjectStore, w.Snapshot.Digest, len(w.Snapshot.Gzip), over.ObjectStore)
		}
		if !f.logged("level=WARN", "snapshot too large to send compressed", over.ObjectStore) {
			t.Errorf("no warning names %s; log:\n%s", over.ObjectStore, f.logs)
		}
	})
}

// mustArray is the JSON array of objects, as a snapshot keeps them.
func mustArray(t *testing.T, objects []json.RawMessage) []byte {
	t.Helper()
	data, err := json.Marshal(objects)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
