package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/flotilla-dev/flotilla/deploy/crds"
	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// The tests on real parts share one hub (a test bed, started by the first
// test that needs it); each test runs its own NATS server and dispatcher,
// one after the other, with cluster names of its own.
var (
	hubOnce sync.Once
	hubEnv  *testbed.Env
	hubErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if hubEnv != nil {
		_ = hubEnv.Stop()
	}
	os.Exit(code)
}

// testHub returns a client of the shared hub, its CRDs installed.
func testHub(t *testing.T) dynamic.Interface {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the test bed's hub and NATS")
	}
	hubOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// The test bed needs a managed cluster; these tests use only the hub.
		if hubEnv, hubErr = testbed.Start(ctx, testbed.Options{Clusters: []string{"member"}}); hubErr != nil {
			return
		}
		hubErr = crds.Install(ctx, hubEnv.Hub.Config)
	})
	if hubErr != nil {
		t.Fatal(hubErr)
	}
	hub, err := dynamic.NewForConfig(hubEnv.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	return hub
}

// logs keeps what a dispatcher logged, for the tests that check a warning.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type fixture struct {
	t    *testing.T
	ctx  context.Context
	hub  dynamic.Interface
	js   jetstream.JetStream
	logs *logs
	// stop stops the dispatcher and waits until it has.
	stop func()
}

// start runs a dispatcher with opts against the shared hub and a NATS
// server of its own (started with nopts), and returns once it consumes
// joins (its clusters consumer delivers only what arrives after it exists).
func start(t *testing.T, opts Options, nopts natstest.Options) *fixture {
	t.Helper()
	_, js := natstest.NewWith(t, nopts).JetStream(t)
	return run(t, opts, js, js)
}

// run runs a dispatcher with opts over its own JetStream js, once setup's
// has made the streams.
func run(t *testing.T, opts Options, setup, js jetstream.JetStream) *fixture {
	t.Helper()
	hub := testHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	if err := bus.Setup(ctx, setup, bus.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, hub: hub, js: js, logs: &logs{}}
	d, err := New(hub, js, slog.New(slog.NewTextHandler(f.logs, nil)), opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = d.Run(runCtx)
	}()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			stop()
			<-done
			if runErr != nil {
				t.Errorf("dispatcher: %v", runErr)
			}
		})
	}
	// Runs before the NATS server's cleanup: the dispatcher stops first.
	t.Cleanup(func() {
		f.stop()
		if t.Failed() {
			t.Logf("dispatcher log:\n%s", f.logs)
		}
	})
	eventually.True(t, 60*time.Second, "the dispatcher consuming joins", func() (bool, error) {
		select {
		case <-done:
			return false, fmt.Errorf("the dispatcher stopped: %v", runErr)
		default:
		}
		_, err := js.Consumer(ctx, bus.StreamClusters, bus.ConsumerDispatcher)
		return err == nil, err
	})
	return f
}

// beat sends a join or heartbeat (kind) of cluster as its agent would.
func (f *fixture) beat(cluster, kind string, every time.Duration) time.Time {
	f.t.Helper()
	at, err := f.send(cluster, kind, every)
	if err != nil {
		f.t.Fatal(err)
	}
	return at
}

// send is beat for any goroutine: it returns when the beat was sent.
func (f *fixture) send(cluster, kind string, every time.Duration) (time.Time, error) {
	typ := events.TypeClusterHeartbeat
	if kind == "join" {
		typ = events.TypeClusterJoin
	}
	e := events.New(fmt.Sprintf("%s.%s.%d", cluster, kind, time.Now().UnixNano()), events.SourceAgent(cluster), typ, cluster,
		&events.ClusterJoinData{Cluster: cluster, KubernetesVersion: "v1.37.0", HeartbeatMillis: every.Milliseconds(), Labels: map[string]string{"env": "test"}})
	if _, err := bus.Publish(f.ctx, f.js, bus.ClusterSubject(cluster, kind), e); err != nil {
		return time.Time{}, err
	}
	return e.Time, nil
}

// cluster reads a ManagedCluster from the hub itself.
func (f *fixture) cluster(name string) (*clusterv1.ManagedCluster, error) {
	u, err := f.hub.Resource(clusterv1.ManagedClusterResource).Get(f.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	mc := &clusterv1.ManagedCluster{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, mc); err != nil {
		return nil, err
	}
	return mc, nil
}

// waitCondition waits until the hub shows cluster's condition typ with status.
func (f *fixture) waitCondition(name, typ string, status metav1.ConditionStatus) {
	f.t.Helper()
	eventually.True(f.t, 60*time.Second, fmt.Sprintf("%s %s %s", name, typ, status), func() (bool, error) {
		mc, err := f.cluster(name)
		if err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(mc.Status.Conditions, typ)
		if c == nil {
			return false, fmt.Errorf("no %s condition: %+v", typ, mc.Status.Conditions)
		}
		return c.Status == status, fmt.Errorf("%s is %s: %s", typ, c.Status, c.Message)
	})
}

// deleteCluster removes a test's ManagedCluster from the shared hub.
func (f *fixture) deleteCluster(name string) {
	f.t.Helper()
	err := f.hub.Resource(clusterv1.ManagedClusterResource).Delete(f.ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Errorf("delete ManagedCluster %s: %v", name, err)
	}
}

// join registers an accepted cluster (the fixture's dispatcher auto-accepts)
// and waits until the hub shows it accepted.
func (f *fixture) join(name string) {
	f.t.Helper()
	f.beat(name, "join", time.Minute)
	f.t.Cleanup(func() { f.deleteCluster(name) })
	f.waitCondition(name, clusterv1.ConditionHubAccepted, metav1.ConditionTrue)
}

// deploy publishes what the planner does when deploy step "deploy" of
// release rev of app starts: its policies and snapshot.
func (f *fixture) deploy(ns, app string, rev int64, snap *events.Snapshot, policies ...events.Policy) events.AppRef {
	f.t.Helper()
	ref := events.AppRef{Namespace: ns, Application: app, UID: "uid-" + app, Release: fmt.Sprintf("%s-v%d", app, rev), Revision: rev}
	step := &events.StepData{AppRef: ref, Step: "deploy", StepType: "deploy", Policies: policies, Snapshot: snap}
	e := events.New(events.StepEventID(ref, "deploy", events.TypeStepStarted), events.SourcePlanner, events.TypeStepStarted, ns+"/"+app, step)
	if _, err := bus.Publish(f.ctx, f.js, bus.StepSubject(ns, app), e); err != nil {
		f.t.Fatal(err)
	}
	return ref
}

// topology is a topology policy with props (JSON).
func topology(props string) events.Policy {
	return events.Policy{Name: "where", Type: "topology", Properties: json.RawMessage(props)}
}

// dispatched waits for the dispatcher's answer to step "deploy" of ref.
func (f *fixture) dispatched(ref events.AppRef) *events.StepDispatchedData {
	f.t.Helper()
	stream, err := f.js.Stream(f.ctx, bus.StreamDispatch)
	if err != nil {
		f.t.Fatal(err)
	}
	raw := eventually.Value(f.t, 60*time.Second, "the dispatcher's answer for "+ref.Release, func() (*jetstream.RawStreamMsg, error) {
		return stream.GetLastMsgForSubject(f.ctx, bus.DispatchSubject(ref.Namespace, ref.Application))
	}, func(*jetstream.RawStreamMsg) bool { return true })
	e, err := events.DecodeStored(raw)
	if err != nil {
		f.t.Fatal(err)
	}
	d, ok := e.Data.(*events.StepDispatchedData)
	if !ok {
		f.t.Fatalf("%s on %s, want a dispatch answer", e.Type, raw.Subject)
	}
	return d
}

// work returns the work message the dispatcher left for cluster's app.
func (f *fixture) work(cluster, ns, app string) *events.WorkData {
	f.t.Helper()
	stream, err := f.js.Stream(f.ctx, bus.StreamWork)
	if err != nil {
		f.t.Fatal(err)
	}
	raw, err := stream.GetLastMsgForSubject(f.ctx, bus.WorkSubject(cluster, ns, app))
	if err != nil {
		f.t.Fatalf("work for %s of %s/%s: %v", cluster, ns, app, err)
	}
	e, err := events.DecodeStored(raw)
	if err != nil {
		f.t.Fatal(err)
	}
	w, ok := e.Data.(*events.WorkData)
	if !ok {
		f.t.Fatalf("%s on %s, want work", e.Type, raw.Subject)
	}
	return w
}

// logged says whether the dispatcher logged a line holding every part.
func (f *fixture) logged(parts ...string) bool {
	for _, line := range strings.Split(f.logs.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
