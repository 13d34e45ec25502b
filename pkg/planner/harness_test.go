package planner_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/flotilla-dev/flotilla/deploy/admission"
	"github.com/flotilla-dev/flotilla/deploy/crds"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// env is the hub the tests of this package share. Each test is isolated
// on it: its own namespace (deleted when it ends), its own NATS server, and
// planners that run only that namespace.
var env *testbed.Env

// wait bounds every wait for the planner: generous, for a loaded machine.
const wait = 60 * time.Second

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var err error
		env, err = testbed.Start(ctx, testbed.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer env.Stop()
		if err := crds.Install(ctx, env.Hub.Config); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := admission.Install(ctx, env.Hub.Config); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	ns    string
	js    jetstream.JetStream
	dyn   dynamic.Interface
	steps map[string]*bus.Tail
	// clusters are the ManagedClusters the test registered.
	clusters map[string]bool
}

// newFixture gives a test its namespace on the shared hub and its own NATS
// server; both are gone when the test ends.
func newFixture(t *testing.T, ns string) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the hub API server and NATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	_, js := natstest.New(t).JetStream(t)
	if err := bus.Setup(ctx, js, bus.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, ns: ns, js: js, dyn: dyn}
	f.kubectl("create", "namespace", ns)
	t.Cleanup(f.removeNamespace)
	return f
}

// removeNamespace deletes what the test left (its planners are stopped by
// then: cleanups run last first): its Applications, without waiting for
// finalizers nobody runs any more, and the namespace.
func (f *fixture) removeNamespace() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	apps := f.dyn.Resource(v1beta1.ApplicationResource).Namespace(f.ns)
	list, err := apps.List(ctx, metav1.ListOptions{})
	if err != nil {
		f.t.Logf("cleanup: list Applications of %s: %v", f.ns, err)
		return
	}
	for _, a := range list.Items {
		if len(a.GetFinalizers()) > 0 {
			a.SetFinalizers(nil)
			if _, err := apps.Update(ctx, &a, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
				f.t.Logf("cleanup: %s/%s finalizers: %v", f.ns, a.GetName(), err)
			}
		}
	}
	if _, _, err := env.Kubectl(ctx, testbed.HubName, "delete", "namespace", f.ns, "--wait=false"); err != nil {
		f.t.Logf("cleanup: %v", err)
	}
}

func (f *fixture) kubectl(args ...string) string {
	f.t.Helper()
	out, _, err := env.Kubectl(f.ctx, testbed.HubName, args...)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// applyYAML applies a manifest with plain kubectl.
func (f *fixture) applyYAML(manifest string) {
	f.t.Helper()
	path := filepath.Join(f.t.TempDir(), "m.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.kubectl("apply", "-f", path)
}

// seed returns the seed's YAML files joined, moved to the fixture's namespace.
func (f *fixture) seed(files ...string) string {
	f.t.Helper()
	if len(files) == 0 {
		files = []string{"app-meta.yaml", "policy-topology.yaml", "workflow.yaml", "app.yaml"}
	}
	var parts []string
	for _, name := range files {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", "seed", name))
		if err != nil {
			f.t.Fatal(err)
		}
		parts = append(parts, strings.ReplaceAll(string(data), "namespace: demo", "namespace: "+f.ns))
	}
	return strings.Join(parts, "\n---\n")
}

// startPlanner runs a planner replica of the fixture's namespace until the
// test ends or stop is called.
func (f *fixture) startPlanner() (stop func()) {
	f.t.Helper()
	return f.startPlannerWith(planner.Options{}, nil)
}

// startPlannerWith runs a planner replica with opts (resync: 2 s, namespace:
// the fixture's, unless set); afterPublish, if set, runs after a change
// was saved and its events published.
func (f *fixture) startPlannerWith(opts planner.Options, afterPublish func() error) (stop func()) {
	f.t.Helper()
	return f.startPlannerHooked(opts, nil, afterPublish)
}

// startPlannerHooked is startPlannerWith with afterSave too, run between
// saving a change and publishing its events.
func (f *fixture) startPlannerHooked(opts planner.Options, afterSave, afterPublish func() error) (stop func()) {
	f.t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{f.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if opts.Resync == 0 {
		opts.Resync = 2 * time.Second
	}
	if opts.Namespace == "" {
		opts.Namespace = f.ns
	}
	clients, err := hub.NewClients(env.Hub.Config)
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := planner.New(clients, f.js, log, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	if afterPublish != nil {
		planner.SetAfterPublish(p, afterPublish)
	}
	if afterSave != nil {
		planner.SetAfterSave(p, afterSave)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("planner: %v", err)
		}
	}
	f.t.Cleanup(stop)
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// getApp reads the Application.
func (f *fixture) getApp(name string) (*v1beta1.Application, error) {
	u, err := f.dyn.Resource(v1beta1.ApplicationResource).Namespace(f.ns).Get(f.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	app := &v1beta1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app); err != nil {
		return nil, err
	}
	return app, nil
}

// app reads the Application, failing the test if it cannot.
func (f *fixture) app(name string) *v1beta1.Application {
	f.t.Helper()
	app, err := f.getApp(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return app
}

// waitApp waits until ok says so of the Application.
func (f *fixture) waitApp(name, what string, ok func(*v1beta1.Application) bool) *v1beta1.Application {
	f.t.Helper()
	return eventually.Value(f.t, wait, fmt.Sprintf("Application %s/%s %s", f.ns, name, what),
		func() (*v1beta1.Application, error) { return f.getApp(name) },
		func(a *v1beta1.Application) bool { return ok(a) })
}

func phaseIs(p v1beta1.ApplicationPhase) func(*v1beta1.Application) bool {
	return func(a *v1beta1.Application) bool { return a.Status.Phase == p }
}

// stepEvents returns every step event published for an application, in order.
func (f *fixture) stepEvents(app string) []*events.Event {
	f.t.Helper()
	evs, err := f.readStepEvents(app)
	if err != nil {
		f.t.Fatal(err)
	}
	return evs
}

func (f *fixture) readStepEvents(app string) ([]*events.Event, error) {
	if f.steps == nil {
		f.steps = map[string]*bus.Tail{}
	}
	tl, ok := f.steps[app]
	if !ok {
		var err error
		if tl, err = bus.NewTail(f.ctx, f.js, bus.StreamSteps, bus.StepSubject(f.ns, app)); err != nil {
			return nil, err
		}
		f.steps[app] = tl
	}
	return tl.Events()
}

// waitStepEvents waits until the application has at least n step events.
func (f *fixture) waitStepEvents(app string, n int) []*events.Event {
	f.t.Helper()
	return eventually.Value(f.t, wait, fmt.Sprintf("%d step events of %s", n, app),
		func() ([]*events.Event, error) { return f.readStepEvents(app) },
		func(evs []*events.Event) bool { return len(evs) >= n })
}

// summary is "<verb> <step>" per event, for comparisons and messages.
func summary(evs []*events.Event) []string {
	var out []string
	for _, e := range evs {
		s := events.Verb(e.Type)
		switch d := e.Data.(type) {
		case *events.StepData:
			s += " " + d.Step
		case *events.ApplicationDeletedData:
			s += " " + d.Application
		}
		out = append(out, s)
	}
	return out
}

// report publishes what the dispatcher and a cluster's agent would: the
// step went to cluster, and the cluster applied the release, healthy or not.
func (f *fixture) report(step *events.StepData, cluster string, phase events.ClusterPhase, health events.Health, msg string) {
	f.t.Helper()
	disp := events.New(events.DispatchID(step.AppRef, step.Step), events.SourceDispatcher, events.TypeStepDispatched, "",
		&events.StepDispatchedData{AppRef: step.AppRef, Step: step.Step, Clusters: []string{cluster}})
	if _, err := bus.Publish(f.ctx, f.js, bus.DispatchSubject(step.Namespace, step.Application), disp); err != nil {
		f.t.Fatal(err)
	}
	f.status(step.AppRef, cluster, phase, health, msg)
}

func (f *fixture) status(ref events.AppRef, cluster string, phase events.ClusterPhase, health events.Health, msg string) {
	f.t.Helper()
	// The planner reads only the reports of clusters the hub has.
	if !f.clusters[cluster] {
		f.managedCluster(cluster)
	}
	st := &events.ClusterStatusData{AppRef: ref, Cluster: cluster, Phase: phase, Message: msg, ObservedAt: time.Now().UTC(),
		Objects: []events.ObjectStatus{{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: ref.Namespace, Name: "demo", Health: health,
			Replicas: &events.Replicas{Desired: 1, Ready: 1, Updated: 1, Available: 1}}}}
	id := fmt.Sprintf("%s.%s.%s.%d", ref.UID, cluster, phase, time.Now().UnixNano())
	if _, err := bus.Publish(f.ctx, f.js, bus.StatusSubject(cluster, ref.Namespace, ref.Application), events.New(id, events.SourceAgent(cluster), events.TypeClusterStatus, "", st)); err != nil {
		f.t.Fatal(err)
	}
}

func stepData(t *testing.T, e *events.Event) *events.StepData {
	t.Helper()
	d, ok := e.Data.(*events.StepData)
	if !ok {
		t.Fatalf("event %s has %T data", e.Type, e.Data)
	}
	return d
}

// eventAt returns evs[i], failing the test if there are not that many.
func eventAt(t *testing.T, evs []*events.Event, i int) *events.Event {
	t.Helper()
	if i >= len(evs) {
		t.Fatalf("want step event %d, have %d: %v", i+1, len(evs), summary(evs))
	}
	return evs[i]
}

func objectsOf(t *testing.T, d *events.StepData) []*unstructured.Unstructured {
	t.Helper()
	if d.Snapshot == nil {
		t.Fatalf("step %s carries no snapshot", d.Step)
	}
	var out []*unstructured.Unstructured
	for _, raw := range d.Snapshot.Objects {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// managedCluster registers a cluster on the hub (cluster-scoped, so named
// for the test), removed when the test ends.
func (f *fixture) managedCluster(name string) {
	f.t.Helper()
	if f.clusters == nil {
		f.clusters = map[string]bool{}
	}
	f.clusters[name] = true
	f.applyYAML("apiVersion: cluster.open-cluster-management.io/v1\nkind: ManagedCluster\nmetadata:\n  name: " + name + "\nspec:\n  hubAcceptsClient: true\n")
	f.t.Cleanup(func() {
		_, _, _ = env.Kubectl(context.Background(), testbed.HubName, "delete", "managedcluster", name, "--ignore-not-found")
	})
}

func (f *fixture) gone(name string) (bool, error) {
	_, err := f.dyn.Resource(v1beta1.ApplicationResource).Namespace(f.ns).Get(f.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, err
}

func (f *fixture) waitGone(name string) {
	f.t.Helper()
	eventually.True(f.t, wait, fmt.Sprintf("Application %s/%s removed", f.ns, name), func() (bool, error) { return f.gone(name) })
}

// stillThere fails the test if the Application is gone.
func (f *fixture) stillThere(name, why string) {
	f.t.Helper()
	gone, err := f.gone(name)
	if err != nil {
		f.t.Fatal(err)
	}
	if gone {
		f.t.Fatalf("Application %s/%s removed %s", f.ns, name, why)
	}
}
