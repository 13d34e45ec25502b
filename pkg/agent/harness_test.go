package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
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
	"github.com/flotilla-dev/flotilla/pkg/apply/applytest"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/dispatcher"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/seal"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// The package's tests share one hub with two managed clusters, one NATS
// server, one dispatcher and an agent per cluster (accepted by the fixture,
// as an admin would); each test uses its own application namespace.
var (
	env    *testbed.Env
	nc     *nats.Conn
	js     jetstream.JetStream
	hubDyn dynamic.Interface
	// faults are the dynamic clients of the agents of c1 and c2, and
	// publishes their JetStream: a test makes chosen calls of its own
	// namespace fail.
	faults    = map[string]*applytest.Dynamic{}
	publishes = map[string]*publishFaults{}
	// workSealer is the hub's work key: the dispatcher seals with it, the
	// agents trust its public half.
	workSealer *seal.Sealer
)

const (
	heartbeat = 300 * time.Millisecond
	// wait bounds every wait for something to happen: generous, for a
	// loaded two-core machine.
	wait = 60 * time.Second
)

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
		if js, err = jetstream.New(nc); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Every stream, as the hub's services make them.
		if err := bus.Setup(ctx, js, bus.SetupOptions{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if hubDyn, err = dynamic.NewForConfig(env.Hub.Config); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		log := testLogger()
		// Work is sealed with the hub's work key, and agents check it.
		kp, err := nkeys.CreateAccount()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		seed, _ := kp.Seed()
		if workSealer, err = seal.NewSealer(seed); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		d, err := dispatcher.New(hubDyn, js, log.With("service", "dispatcher"), dispatcher.Options{CheckInterval: 100 * time.Millisecond, Sealer: workSealer})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dispatched := make(chan struct{})
		services := []<-chan struct{}{dispatched}
		go func() {
			defer close(dispatched)
			if err := d.Run(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "dispatcher:", err)
			}
		}()
		for _, c := range []string{"c1", "c2"} {
			var done <-chan struct{}
			if done, faults[c], publishes[c], err = startAgent(ctx, c, env.Cluster(c)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			services = append(services, done)
			if err := accept(ctx, c); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		// As `make up` does: start once the hub shows both joined.
		for _, c := range []string{"c1", "c2"} {
			joined, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := eventually.Wait(joined, func() (bool, error) { return conditionIs(joined, c, clusterv1.ConditionJoined, "True"), nil })
			cancel()
			if err != nil {
				fmt.Fprintln(os.Stderr, "cluster", c, "never joined:", err)
				return 1
			}
		}
		code := m.Run()
		cancel() // services stop before NATS and the clusters do
		for _, done := range services {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				fmt.Fprintln(os.Stderr, "a service did not stop within 10 s")
			}
		}
		return code
	}())
}

// startAgent runs an agent with only its own cluster's clients (its
// dynamic client through faults, its publishes through pubs); cancel ctx
// to stop it.
func startAgent(ctx context.Context, name string, cluster *testbed.Cluster) (done <-chan struct{}, faults *applytest.Dynamic, pubs *publishFaults, err error) {
	log := testLogger()
	clients, err := hub.NewClients(cluster.Config)
	if err != nil {
		return nil, nil, nil, err
	}
	faults = applytest.NewDynamic(clients.Dynamic)
	clients.Dynamic = faults
	conn, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("agent %s: %w", name, err)
	}
	ajs, err := jetstream.New(conn)
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("agent %s: %w", name, err)
	}
	pubs = &publishFaults{JetStream: ajs, left: map[publishKey]int{}, hits: map[publishKey]int{}}
	workKey, err := workSealer.PublicKey()
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	a, err := agent.New(clients, conn, pubs, log.With("service", "agent"), agent.Options{Cluster: name, Heartbeat: heartbeat, HubWorkKeys: []string{workKey}})
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer conn.Close()
		if err := a.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
		}
	}()
	return ch, faults, pubs, nil
}

// publishFaults is an agent's JetStream, whose publishes of an event type
// on a subject fail when a test says so (as when NATS does not answer).
type publishFaults struct {
	jetstream.JetStream
	mu   sync.Mutex
	left map[publishKey]int
	hits map[publishKey]int
}

type publishKey struct{ subject, typ string }

// failNext makes the next n publishes of typ on subject fail.
func (p *publishFaults) failNext(subject, typ string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.left[publishKey{subject, typ}] = n
}

// failed is how many publishes of typ on subject failed.
func (p *publishFaults) failed(subject, typ string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[publishKey{subject, typ}]
}

func (p *publishFaults) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	k := publishKey{msg.Subject, msg.Header.Get(events.HeaderType)}
	p.mu.Lock()
	fail := p.left[k] > 0
	if fail {
		p.left[k]--
		p.hits[k]++
	}
	p.mu.Unlock()
	if fail {
		return nil, errors.New("injected: nats: timeout")
	}
	return p.JetStream.PublishMsg(ctx, msg, opts...)
}

// accept waits for the cluster to register, then accepts it as an admin would.
func accept(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := eventually.Wait(ctx, func() (bool, error) {
		_, err := hubDyn.Resource(clusterv1.ManagedClusterResource).Patch(ctx, name, types.MergePatchType, []byte(`{"spec":{"hubAcceptsClient":true}}`), metav1.PatchOptions{})
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("accept %s: %w", name, err)
	}
	return nil
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	ns    string
	uid   string
	tails map[string]*bus.Tail
	// readOnly are the kinds the releases deploy only reads (read-only policy).
	readOnly []string
}

// tail returns every event so far on a subject of the status stream.
func (f *fixture) tail(subject string) []*events.Event {
	f.t.Helper()
	tl, ok := f.tails[subject]
	if !ok {
		var err error
		if tl, err = bus.NewTail(f.ctx, js, bus.StreamOf(subject), subject); err != nil {
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
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
	objs := f.objects(manifests...)
	props, err := json.Marshal(map[string]any{"clusters": clusters})
	if err != nil {
		f.t.Fatal(err)
	}
	digest, err := snapshot.Digest(objs)
	if err != nil {
		f.t.Fatal(err)
	}
	if forcedDigest != "" {
		digest = forcedDigest
	}
	step := &events.StepData{AppRef: f.ref(rev), Step: "deploy", StepType: "deploy",
		Policies: []events.Policy{{Name: "where", Type: "topology", Properties: props}},
		Snapshot: &events.Snapshot{Digest: digest, Objects: objs}, ReadOnly: f.readOnly}
	e := events.New(events.StepEventID(f.ref(rev), "deploy", events.TypeStepStarted), events.SourcePlanner, events.TypeStepStarted, "", step)
	if _, err := bus.Publish(f.ctx, js, bus.StepSubject(f.ns, "demo"), e); err != nil {
		f.t.Fatal(err)
	}
}

// objects are the manifests (YAML documents) as a snapshot holds them.
func (f *fixture) objects(manifests ...string) []json.RawMessage {
	f.t.Helper()
	var objs []json.RawMessage
	for _, m := range manifests {
		data, err := yaml.YAMLToJSON([]byte(m))
		if err != nil {
			f.t.Fatal(err)
		}
		objs = append(objs, data)
	}
	return objs
}

// work publishes what the dispatcher would for release rev to cluster,
// with the snapshot as given (the dispatcher checks digests too: going
// around it is how a test shows what the agent checks itself).
func (f *fixture) work(rev int64, cluster string, s *events.Snapshot) {
	f.t.Helper()
	w := &events.WorkData{AppRef: f.ref(rev), Cluster: cluster, Step: "deploy", Snapshot: s}
	e := events.New(events.WorkID(f.ref(rev), "deploy", cluster), events.SourceDispatcher, events.TypeWork, f.ns+"/demo", w)
	// As the dispatcher sends it: sealed with the hub's work key.
	if _, err := bus.PublishSealed(f.ctx, js, bus.WorkSubject(cluster, f.ns, "demo"), e, workSealer); err != nil {
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
	f.eventually("the dispatcher answered", func() (bool, error) {
		for _, e := range f.tail(bus.DispatchSubject(f.ns, "demo")) {
			if d, ok := e.Data.(*events.StepDispatchedData); ok && d.Revision == rev {
				got = d
			}
		}
		return got != nil, nil
	})
	return got
}

// waitReport waits for a status event from cluster that satisfies ok.
func (f *fixture) waitReport(cluster, what string, ok func(*events.ClusterStatusData) bool) *events.ClusterStatusData {
	f.t.Helper()
	var found *events.ClusterStatusData
	f.eventually(cluster+" reported "+what, func() (bool, error) {
		for _, e := range f.reports(cluster) {
			if d, isStatus := e.Data.(*events.ClusterStatusData); isStatus && ok(d) {
				found = d
			}
		}
		return found != nil, nil
	})
	return found
}

// eventually waits (up to wait) for cond to hold.
func (f *fixture) eventually(what string, cond func() (bool, error)) {
	f.t.Helper()
	eventually.True(f.t, wait, what, cond)
}

func (f *fixture) get(cluster, apiVersion, resource, name string) (*unstructured.Unstructured, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, err
	}
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
