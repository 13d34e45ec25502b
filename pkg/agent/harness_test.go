package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/deploy/crds"
	"github.com/flotilla-dev/flotilla/pkg/agent"
	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/dispatcher"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// The package's tests share one hub with two managed clusters, one NATS
// server, one dispatcher and an agent per cluster (accepted by the fixture,
// as an admin would); each test uses its own application namespace.
var (
	env *testbed.Env
	nc  *nats.Conn
	js  jetstream.JetStream
	hub dynamic.Interface
)

const heartbeat = 300 * time.Millisecond

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(func() int {
		if testing.Short() {
			return m.Run()
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var err error
		env, err = testbed.Start(ctx, testbed.Options{Clusters: []string{"c1", "c2"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer env.Stop()
		if err := crds.Install(ctx, env.Hub.Config); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		s, err := natstest.Start(natstest.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer s.Shutdown()
		if nc, err = nats.Connect(s.URL()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer nc.Close()
		js, _ = jetstream.New(nc)
		hub, _ = dynamic.NewForConfig(env.Hub.Config)
		log := testLogger()
		d, err := dispatcher.New(hub, js, log.With("service", "dispatcher"), dispatcher.Options{CheckInterval: 100 * time.Millisecond})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			if err := d.Run(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "dispatcher:", err)
			}
		}()
		for _, c := range []string{"c1", "c2"} {
			startAgent(ctx, c, env.Cluster(c))
			if err := accept(ctx, c); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		// As `make up` does: start once the hub shows both joined.
		for _, c := range []string{"c1", "c2"} {
			deadline := time.Now().Add(30 * time.Second)
			for !conditionIs(ctx, c, clusterv1.ConditionJoined, "True") {
				if time.Now().After(deadline) {
					fmt.Fprintln(os.Stderr, "cluster", c, "never joined")
					return 1
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		code := m.Run()
		cancel() // services stop before NATS and the clusters do
		time.Sleep(300 * time.Millisecond)
		return code
	}())
}

// startAgent runs an agent with only its own cluster's config; cancel ctx to stop it.
func startAgent(ctx context.Context, name string, cluster *testbed.Cluster) (done <-chan struct{}) {
	log := testLogger()
	conn, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		panic(err)
	}
	ajs, _ := jetstream.New(conn)
	a, err := agent.New(cluster.Config, conn, ajs, log.With("service", "agent"), agent.Options{Cluster: name, Heartbeat: heartbeat})
	if err != nil {
		panic(err)
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer conn.Close()
		if err := a.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
		}
	}()
	return ch
}

// accept waits for the cluster to register, then accepts it as an admin would.
func accept(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := hub.Resource(clusterv1.ManagedClusterResource).Patch(ctx, name, types.MergePatchType, []byte(`{"spec":{"hubAcceptsClient":true}}`), metav1.PatchOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("accept %s: %w", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	ns    string
	uid   string
	tails map[string]*bus.Tail
}

// tail returns every event so far on a subject of the status stream.
func (f *fixture) tail(subject string) []*events.Event {
	f.t.Helper()
	tl, ok := f.tails[subject]
	if !ok {
		var err error
		if tl, err = bus.NewTail(f.ctx, js, bus.StreamStatus, subject); err != nil {
			f.t.Fatal(err)
		}
		f.tails[subject] = tl
	}
	evs, err := tl.Events()
	if err != nil {
		f.t.Fatal(err)
	}
	return evs
}

func newFixture(t *testing.T, ns string) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("needs managed clusters and NATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &fixture{t: t, ctx: ctx, ns: ns, uid: "uid-" + ns, tails: map[string]*bus.Tail{}}
}

func (f *fixture) client(cluster string) *kubernetes.Clientset {
	f.t.Helper()
	cs, err := kubernetes.NewForConfig(env.Cluster(cluster).Config)
	if err != nil {
		f.t.Fatal(err)
	}
	return cs
}

func (f *fixture) dynamic(cluster string) dynamic.Interface {
	f.t.Helper()
	d, err := dynamic.NewForConfig(env.Cluster(cluster).Config)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) ref(rev int64) events.AppRef {
	return events.AppRef{Namespace: f.ns, Application: "demo", UID: f.uid, Release: fmt.Sprintf("demo-v%d", rev), Revision: rev}
}

// deploy publishes what the planner would: deploy step rev of the app, to
// the named clusters, with the objects (YAML documents).
func (f *fixture) deploy(rev int64, clusters []string, manifests ...string) {
	f.t.Helper()
	f.deployWithDigest(rev, clusters, "", manifests...)
}

// deployWithDigest is deploy with a snapshot digest of the caller's (empty: the right one).
func (f *fixture) deployWithDigest(rev int64, clusters []string, forcedDigest string, manifests ...string) {
	f.t.Helper()
	var objs []json.RawMessage
	for _, m := range manifests {
		data, err := yaml.YAMLToJSON([]byte(m))
		if err != nil {
			f.t.Fatal(err)
		}
		objs = append(objs, data)
	}
	props, _ := json.Marshal(map[string]any{"clusters": clusters})
	digest, err := snapshot.Digest(objs)
	if err != nil {
		f.t.Fatal(err)
	}
	if forcedDigest != "" {
		digest = forcedDigest
	}
	step := &events.StepData{AppRef: f.ref(rev), Step: "deploy", StepType: "deploy",
		Policies: []events.Policy{{Name: "where", Type: "topology", Properties: props}},
		Snapshot: &events.Snapshot{Digest: digest, Objects: objs}}
	e := events.New(events.StepEventID(f.ref(rev), "deploy", events.TypeStepStarted), events.SourcePlanner, events.TypeStepStarted, "", step)
	if _, err := bus.Publish(f.ctx, js, bus.StepSubject(f.ns, "demo"), e); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) deleteApp() {
	f.t.Helper()
	e := events.New(f.uid+".deleted", events.SourcePlanner, events.TypeApplicationDeleted, "", &events.ApplicationDeletedData{Namespace: f.ns, Application: "demo", UID: f.uid})
	if _, err := bus.Publish(f.ctx, js, bus.StepSubject(f.ns, "demo"), e); err != nil {
		f.t.Fatal(err)
	}
}

// reports returns the events on the status stream about this app from cluster (or every cluster: "*").
func (f *fixture) reports(cluster string) []*events.Event {
	f.t.Helper()
	return f.tail(fmt.Sprintf("flotilla.status.%s.%s.demo", cluster, f.ns))
}

// dispatched returns the dispatcher's answer for release rev.
func (f *fixture) dispatched(rev int64) *events.StepDispatchedData {
	f.t.Helper()
	var got *events.StepDispatchedData
	f.eventually("the dispatcher answered", func() bool {
		for _, e := range f.tail(bus.DispatchSubject(f.ns, "demo")) {
			if d := e.Data.(*events.StepDispatchedData); d.Revision == rev {
				got = d
			}
		}
		return got != nil
	})
	return got
}

// waitReport waits for a status event from cluster that satisfies ok.
func (f *fixture) waitReport(cluster, what string, ok func(*events.ClusterStatusData) bool) *events.ClusterStatusData {
	f.t.Helper()
	var found *events.ClusterStatusData
	f.eventually(cluster+" reported "+what, func() bool {
		for _, e := range f.reports(cluster) {
			if d, isStatus := e.Data.(*events.ClusterStatusData); isStatus && ok(d) {
				found = d
			}
		}
		return found != nil
	})
	return found
}

func (f *fixture) eventually(what string, ok func() bool) {
	f.t.Helper()
	for !ok() {
		select {
		case <-f.ctx.Done():
			f.t.Fatalf("never: %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (f *fixture) get(cluster, apiVersion, resource, name string) (*unstructured.Unstructured, error) {
	gv, _ := schema.ParseGroupVersion(apiVersion)
	return f.dynamic(cluster).Resource(gv.WithResource(resource)).Namespace(f.ns).Get(f.ctx, name, metav1.GetOptions{})
}

func isNotFound(err error) bool {
	var st interface{ Status() metav1.Status }
	return errors.As(err, &st) && st.Status().Code == 404
}

func deployment(name, image string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
  labels: {app: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      containers: [{name: app, image: %s}]
`, name, name, replicas, name, name, image)
}

func unstructuredSlice(obj map[string]any, path ...string) ([]any, bool, error) {
	return unstructured.NestedSlice(obj, path...)
}

// testLogger logs warnings, or everything with FLOTILLA_TEST_LOG=debug.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("FLOTILLA_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
