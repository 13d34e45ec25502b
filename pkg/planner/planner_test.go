package planner_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
)

// The seed, unchanged: the planner starts deploy-test with the snapshot;
// once the test cluster reports healthy, the app waits for approval and
// kubectl prints the seed's line.
func TestSeedWaitsForApprovalAfterTheTestCluster(t *testing.T) {
	f := newFixture(t, "demo")
	f.startPlanner()
	for _, name := range []string{"app-meta.yaml", "policy-topology.yaml", "workflow.yaml", "app.yaml"} {
		f.kubectl("apply", "-f", "../../examples/seed/"+name) // byte for byte the seed's files
	}

	started := f.waitStepEvents("demo", 1)
	if got := summary(started); !slices.Equal(got, []string{"started deploy-test"}) {
		t.Fatalf("first step events %v", got)
	}
	d := stepData(t, started[0])
	if d.Release != "demo-v1" || d.Revision != 1 || d.PublishVersion != "version1" {
		t.Errorf("release %+v", d.AppRef)
	}
	var props struct{ Clusters []string }
	if len(d.Policies) != 1 || d.Policies[0].Name != "cluster-test" || json.Unmarshal(d.Policies[0].Properties, &props) != nil ||
		!slices.Equal(props.Clusters, []string{"<clusterid1>"}) {
		t.Errorf("policies %+v", d.Policies)
	}
	objs := objectsOf(t, d)
	if len(objs) != 1 || objs[0].GetKind() != "Deployment" || objs[0].GetName() != "demo" || objs[0].GetNamespace() != "demo" {
		t.Fatalf("snapshot %v", objs)
	}
	if objs[0].GetResourceVersion() != "" || objs[0].GetUID() != "" || objs[0].Object["status"] != nil {
		t.Errorf("snapshot keeps hub-only fields: %v", objs[0].Object)
	}
	if started[0].TraceParent == "" {
		t.Error("step event has no traceparent")
	}

	f.report(d, "managedcluster-test", events.ClusterApplied, events.HealthCurrent, "")
	app := f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))

	evs := f.stepEvents("demo")
	if got := summary(evs); !slices.Equal(got, []string{"started deploy-test", "succeeded deploy-test", "suspended deploy-prod"}) {
		t.Fatalf("step events %v", got)
	}
	suspended := stepData(t, eventAt(t, evs, 2))
	if msg := suspended.Message; msg != `Waiting approval to the deploy step "deploy-prod"` {
		t.Errorf("suspended message %q", msg)
	}
	if objs := objectsOf(t, suspended); len(objs) != 1 || objs[0].GetName() != "demo" {
		t.Error("the suspended deploy step does not say what it will deploy")
	}
	for _, e := range evs {
		if e.TraceParent[3:35] != started[0].TraceParent[3:35] {
			t.Errorf("event %s is in trace %s, not the release's %s", e.ID, e.TraceParent, started[0].TraceParent)
		}
	}

	if ws := app.Status.Workflow; ws == nil || !ws.Suspend || len(ws.Steps) != 2 ||
		ws.Steps[0].Phase != v1beta1.StepSucceeded || ws.Steps[1].Phase != v1beta1.StepSuspending ||
		ws.Steps[1].Message != `Waiting approval to the deploy step "deploy-prod"` || ws.Steps[1].FirstExecuteTime == nil {
		t.Errorf("workflow status %+v", app.Status.Workflow)
	}
	if len(app.Status.Services) != 1 || !app.Status.Services[0].Healthy || app.Status.Services[0].Cluster != "managedcluster-test" {
		t.Errorf("services %+v", app.Status.Services)
	}
	ready := meta.FindStatusCondition(app.Status.Conditions, planner.ConditionReady)
	if ready == nil || ready.Reason != "WaitingApproval" || ready.ObservedGeneration != app.Generation {
		t.Errorf("Ready condition %+v", ready)
	}
	if !slices.Contains(app.Finalizers, planner.Finalizer) {
		t.Errorf("finalizers %v", app.Finalizers)
	}
	out := f.kubectl("get", "app", "demo", "-n", "demo")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^NAME   COMPONENT   TYPE          PHASE                HEALTHY   STATUS   AGE$`),
		regexp.MustCompile(`^demo   demo        ref-objects   workflowSuspending   true               \d+s$`),
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 || !want[0].MatchString(lines[0]) || !want[1].MatchString(lines[1]) {
		t.Errorf("kubectl get app printed:\n%s", out)
	}
}

// publishVersion is the release switch; a release's snapshot never changes.
func TestPublishVersionCutsReleases(t *testing.T) {
	f := newFixture(t, "pv")
	f.startPlanner()
	f.applyYAML(f.seed())
	first := stepData(t, f.waitStepEvents("demo", 1)[0])
	if img := image(t, first); !strings.HasSuffix(img, ":red") {
		t.Fatalf("release 1 image %s", img)
	}

	// Edit the Deployment and the Application without a new publishVersion: no release.
	f.kubectl("-n", "pv", "set", "image", "deployment/demo", "demo=registry.cn-hangzhou.aliyuncs.com/acs/rollouts-demo:blue")
	f.kubectl("-n", "pv", "patch", "app", "demo", "--type=json", `-p=[{"op":"add","path":"/spec/components/0/properties/note","value":"edited"}]`)
	gen := f.app("demo").Generation
	f.waitApp("demo", "observed the edit", func(a *v1beta1.Application) bool { return a.Status.ObservedGeneration == gen })
	if rev := f.app("demo").Status.LatestRevision; rev == nil || rev.Revision != 1 {
		t.Fatalf("an edit without a new publishVersion made release %+v", rev)
	}

	f.kubectl("-n", "pv", "annotate", "--overwrite", "app", "demo", "app.oam.dev/publishVersion=version2")
	app := f.waitApp("demo", "at release 2", func(a *v1beta1.Application) bool {
		return a.Status.LatestRevision != nil && a.Status.LatestRevision.Revision == 2
	})
	if app.Status.LatestRevision.PublishVersion != "version2" || app.Status.LatestRevision.Name != "demo-v2" {
		t.Errorf("latest revision %+v", app.Status.LatestRevision)
	}
	var second *events.StepData
	for _, e := range f.waitStepEvents("demo", 2) {
		if d := stepData(t, e); d.Revision == 2 && e.Type == events.TypeStepStarted {
			second = d
		}
	}
	if second == nil {
		t.Fatal("release 2 started no step")
	}
	if img := image(t, second); !strings.HasSuffix(img, ":blue") {
		t.Errorf("release 2 image %s, want the edited :blue", img)
	}
	if second.Snapshot.Digest == first.Snapshot.Digest {
		t.Error("release 2 has release 1's digest")
	}
	// Release 1's snapshot is kept, unchanged.
	obs, err := f.js.ObjectStore(f.ctx, bus.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(f.ctx, "pv/demo/v1-"+strings.TrimPrefix(first.Snapshot.Digest, "sha256:")[:12])
	if err != nil {
		t.Fatal(err)
	}
	var kept []json.RawMessage
	if err := json.Unmarshal(data, &kept); err != nil {
		t.Fatal(err)
	}
	if string(kept[0]) != string(first.Snapshot.Objects[0]) {
		t.Errorf("release 1's snapshot changed:\n%s\nwas\n%s", kept[0], first.Snapshot.Objects[0])
	}

	// Without the annotation, a spec change is the switch.
	f.kubectl("-n", "pv", "annotate", "app", "demo", "app.oam.dev/publishVersion-")
	f.waitApp("demo", "at release 3", func(a *v1beta1.Application) bool { return a.Status.LatestRevision.Revision == 3 })
	f.kubectl("-n", "pv", "patch", "app", "demo", "--type=json", `-p=[{"op":"add","path":"/spec/components/0/properties/note","value":"again"}]`)
	f.waitApp("demo", "at release 4", func(a *v1beta1.Application) bool { return a.Status.LatestRevision.Revision == 4 })
}

func image(t *testing.T, d *events.StepData) string {
	t.Helper()
	c, _, _ := unstructuredContainers(objectsOf(t, d)[0].Object)
	return c
}

func unstructuredContainers(obj map[string]any) (string, bool, error) {
	spec := obj["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	cs := spec["containers"].([]any)
	return cs[0].(map[string]any)["image"].(string), true, nil
}

// A planner whose every publish after a save fails (as a crash there
// would): the events saved go out at its next pass, the next planner
// continues, and the stream holds each transition once.
func TestCrashBetweenSaveAndPublish(t *testing.T) {
	f := newFixture(t, "crash")
	crashed := make(chan struct{})
	stopA := f.startPlannerHooked(planner.Options{}, func() error {
		select {
		case <-crashed:
		default:
			close(crashed)
		}
		return errors.New("crash before publish")
	}, nil)
	f.applyYAML(f.seed())
	<-crashed
	f.waitStepEvents("demo", 1)
	stopA()

	f.startPlanner()
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	assertOnce(t, f.stepEvents("demo"), []string{"started deploy-test", "succeeded deploy-test", "suspended deploy-prod"})
}

// A planner killed right after it published a step's start, whose
// dispatcher and cluster answered while no planner ran: the next planner
// takes the answers and the step completes. (With the record saved after
// the events, the answer was read against a record without the step
// running and dropped, the start published again was a duplicate the
// stream dropped, and the step ran forever with no cluster.)
func TestKilledAfterPublishingAStepsStart(t *testing.T) {
	killedAfterPublishingTheFirstStart(t, "killed", nil)
}

// The same with the planner down for longer than the stream's duplicate
// window (ten minutes; here shortened to 300 ms): nothing the killed
// planner sent goes out again, though the stream would take it now.
// (Before, the answer dropped, the start went out a second time and
// the cluster applied the release again.)
func TestKilledAfterPublishingLongerThanTheDuplicateWindow(t *testing.T) {
	killedAfterPublishingTheFirstStart(t, "longdown", func(f *fixture) {
		natstest.ForgetDuplicatesAfter(t, f.ctx, f.js, 300*time.Millisecond, bus.StreamSteps)
	})
}

// killedAfterPublishingTheFirstStart kills the planner right after it
// published the seed's first step's start; the cluster answers while no
// planner runs, down (when set) runs, and the next planner must bring the
// application to its approval, each step event published once.
func killedAfterPublishingTheFirstStart(t *testing.T, ns string, down func(*fixture)) {
	f := newFixture(t, ns)
	crashed := make(chan struct{})
	var once sync.Once
	stopA := f.startPlannerWith(planner.Options{}, func() error {
		once.Do(func() { close(crashed) })
		return errors.New("killed")
	})
	f.applyYAML(f.seed())
	<-crashed
	stopA()
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	time.Sleep(200 * time.Millisecond) // the answers are in their streams
	if down != nil {
		down(f)
	}
	f.startPlanner()
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	assertOnce(t, f.stepEvents("demo"), []string{"started deploy-test", "succeeded deploy-test", "suspended deploy-prod"})
}

// The same after an approval, for the step that follows it: the approval
// is not taken again (the gate would refuse it as decided), and nothing
// but the planner's own record brings the answers in. (Before, the step
// stayed running with no cluster and the application's deletion waited
// for ever.)
func TestKilledAfterPublishingTheStartOfAnApprovedStep(t *testing.T) {
	killedAtApprovedStep(t, "killedprod", false)
}

// A planner killed after saving the approved step's start and before
// publishing it: the next planner to load the record publishes it.
func TestKilledAfterSavingTheStartOfAnApprovedStep(t *testing.T) {
	killedAtApprovedStep(t, "killedsaved", true)
}

// killedAtApprovedStep runs the seed to its approval, approves, and kills
// the planner as it commits the start of the production step: after the
// save (afterSave) or after the events went out too. The dispatcher and
// the cluster answer whatever was published while no planner runs; the
// next planner must bring the application to running, each step event
// published once.
func killedAtApprovedStep(t *testing.T, ns string, afterSave bool) {
	f := newFixture(t, ns)
	var armed atomic.Bool
	crashed := make(chan struct{})
	var once sync.Once
	kill := func() error {
		if !armed.Load() {
			return nil
		}
		once.Do(func() { close(crashed) })
		return errors.New("killed")
	}
	var stopA func()
	if afterSave {
		stopA = f.startPlannerHooked(planner.Options{}, kill, nil)
	} else {
		stopA = f.startPlannerWith(planner.Options{}, kill)
	}
	f.applyYAML(f.seed())
	f.report(stepData(t, f.waitStepEvents("demo", 1)[0]), "c-test", events.ClusterApplied, events.HealthCurrent, "")
	evs := f.waitStepEvents("demo", 3)
	prod := stepData(t, evs[2])
	armed.Store(true)
	dec := events.New(events.RunID(prod.AppRef)+".deploy-prod.decided", events.SourceGate, events.TypeStepApproved, f.ns+"/demo",
		&events.StepDecisionData{AppRef: prod.AppRef, Step: "deploy-prod", Approvals: []events.Approval{{Approver: "alice", Decision: events.DecisionApprove, Via: "http", Time: time.Now()}}})
	if _, err := bus.Publish(f.ctx, f.js, bus.GateSubject("decisions", f.ns, "demo"), dec); err != nil {
		t.Fatal(err)
	}
	<-crashed
	stopA()
	if afterSave {
		if got := len(f.stepEvents("demo")); got != 3 {
			t.Fatalf("%d step events published before the kill, want 3", got)
		}
		f.startPlanner()
	}
	started := f.waitStepEvents("demo", 4)[3]
	f.report(stepData(t, started), "c-prod", events.ClusterApplied, events.HealthCurrent, "")
	if !afterSave {
		time.Sleep(200 * time.Millisecond) // the answers are in their streams
		f.startPlanner()
	}
	f.waitApp("demo", "running", phaseIs(v1beta1.PhaseRunning))
	assertOnce(t, f.stepEvents("demo"), []string{"started deploy-test", "succeeded deploy-test", "suspended deploy-prod", "started deploy-prod", "succeeded deploy-prod"})
}

// Two planners at once: each transition is published once.
func TestTwoPlannersPublishEachTransitionOnce(t *testing.T) {
	f := newFixture(t, "twins")
	f.startPlanner()
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	assertOnce(t, f.stepEvents("demo"), []string{"started deploy-test", "succeeded deploy-test", "suspended deploy-prod"})
}

func assertOnce(t *testing.T, evs []*events.Event, want []string) {
	t.Helper()
	if got := summary(evs); !slices.Equal(got, want) {
		t.Errorf("step events %v, want %v", got, want)
	}
	ids := map[string]bool{}
	for _, e := range evs {
		if ids[e.ID] {
			t.Errorf("event %s published twice", e.ID)
		}
		ids[e.ID] = true
	}
}

// A cluster that fails to apply fails the step, naming cluster and object.
func TestClusterFailureFailsTheStep(t *testing.T) {
	f := newFixture(t, "fails")
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-test", events.ClusterFailed, events.HealthUnknown, `apply Deployment fails/demo: admission webhook "policy" denied the request`)
	app := f.waitApp("demo", "failed", phaseIs(v1beta1.PhaseWorkflowFailed))
	step := app.Status.Workflow.Steps[0]
	if step.Phase != v1beta1.StepFailed || !strings.Contains(step.Message, "cluster c-test: apply Deployment fails/demo") {
		t.Errorf("step %+v", step)
	}
	if app.Status.Workflow.Steps[1].Phase != v1beta1.StepSkipped {
		t.Errorf("deploy-prod %+v", app.Status.Workflow.Steps[1])
	}
	evs := f.stepEvents("demo")
	if got := summary(evs); !slices.Equal(got, []string{"started deploy-test", "failed deploy-test"}) {
		t.Errorf("step events %v", got)
	}
}

// A suspend step with a duration resumes by itself; a step timeout fails.
func TestSuspendDurationAndTimeout(t *testing.T) {
	f := newFixture(t, "timers")
	f.startPlanner()
	f.applyYAML(f.seed("app-meta.yaml", "policy-topology.yaml") + `
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: demo
  namespace: timers
spec:
  components:
    - name: demo
      type: ref-objects
      properties:
        objects:
          - apiVersion: apps/v1
            kind: Deployment
            name: demo
  workflow:
    steps:
      - name: bake
        type: suspend
        properties:
          duration: 1s
      - name: deploy-test
        type: deploy
        timeout: 2s
        properties:
          policies: ["cluster-test"]
`)
	app := f.waitApp("demo", "failed by timeout", phaseIs(v1beta1.PhaseWorkflowFailed))
	steps := app.Status.Workflow.Steps
	if steps[0].Phase != v1beta1.StepSucceeded || steps[1].Phase != v1beta1.StepFailed || steps[1].Reason != "Timeout" {
		t.Errorf("steps %+v", steps)
	}
	if got := summary(f.stepEvents("demo")); !slices.Equal(got, []string{"suspended bake", "succeeded bake", "started deploy-test", "failed deploy-test"}) {
		t.Errorf("step events %v", got)
	}
}

// Deleting an Application removes it from every cluster it was sent to
// before it goes away.
func TestDeleteWaitsForEveryCluster(t *testing.T) {
	f := newFixture(t, "bye")
	f.managedCluster("c-bye")
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-bye", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))

	f.kubectl("-n", "bye", "delete", "app", "demo", "--wait=false")
	f.waitApp("demo", "deleting", phaseIs(v1beta1.PhaseDeleting))
	evs := f.waitStepEvents("demo", 4)
	if got := summary(evs); len(got) != 4 || got[3] != "deleted demo" {
		t.Fatalf("step events %v: want the delete event last", got)
	}
	// The planner has decided to wait: its status says for whom.
	f.waitApp("demo", "waiting for its cluster's confirmation", readyMessageIs("waiting for 1 of 1 clusters to confirm removal"))
	f.stillThere("demo", "before its cluster confirmed")
	f.status(d.AppRef, "c-bye", events.ClusterDeleted, events.HealthNotFound, "")
	f.waitGone("demo")
	kv, err := f.js.KeyValue(f.ctx, bus.BucketRuns)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, wait, "the run state removed with the Application", func() (bool, error) {
		_, err := kv.Get(f.ctx, "bye.demo")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return true, nil
		}
		return false, err
	})
}

// readyMessageIs says whether the Ready condition's message is msg.
func readyMessageIs(msg string) func(*v1beta1.Application) bool {
	return func(a *v1beta1.Application) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, planner.ConditionReady)
		return c != nil && c.Message == msg
	}
}

// A snapshot too large for an event travels by name in the object store,
// and only the newest ten releases are kept.
func TestLargeSnapshotsAndReleaseHistory(t *testing.T) {
	f := newFixture(t, "big")
	f.startPlanner()
	big := strings.Repeat("x", snapshot.InlineLimit+1024)
	// kubectl create: apply would copy the data into an annotation, which is capped at 256 KiB.
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  namespace: big\ndata:\n  blob: "+big+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.kubectl("create", "-f", path)
	f.applyYAML(f.seed("app-meta.yaml", "policy-topology.yaml", "workflow.yaml") + `
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: demo
  namespace: big
  annotations:
    app.oam.dev/publishVersion: v1
spec:
  components:
    - name: demo
      type: ref-objects
      properties:
        objects:
          - apiVersion: apps/v1
            kind: Deployment
            name: demo
          - resource: configmaps
            name: big
  workflow:
    ref: deploy-demo
`)
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	if d.Snapshot == nil || len(d.Snapshot.Objects) != 0 || !strings.HasPrefix(d.Snapshot.ObjectStore, "big/demo/v1-") || d.Snapshot.Digest == "" {
		t.Fatalf("large snapshot travels as %+v", d.Snapshot)
	}
	obs, err := f.js.ObjectStore(f.ctx, bus.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(f.ctx, d.Snapshot.ObjectStore)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), big) {
		t.Error("stored snapshot lacks the ConfigMap's data")
	}

	for v := 2; v <= 12; v++ {
		f.kubectl("-n", "big", "annotate", "--overwrite", "app", "demo", fmt.Sprintf("app.oam.dev/publishVersion=v%d", v))
		f.waitApp("demo", fmt.Sprintf("at release %d", v), func(a *v1beta1.Application) bool {
			return a.Status.LatestRevision != nil && a.Status.LatestRevision.Revision == int64(v)
		})
	}
	kept := map[int]bool{}
	infos, err := obs.List(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		var v int
		if _, err := fmt.Sscanf(info.Name, "big/demo/v%d-", &v); err == nil {
			kept[v] = true
		}
	}
	for v := 1; v <= 12; v++ {
		if kept[v] != (v > 2) {
			t.Errorf("snapshot of release %d kept=%v; want the newest 10 kept", v, kept[v])
		}
	}
}

// A cluster deleted from the hub never confirms a removal: the deletion of
// an Application it held does not wait for it.
func TestDeletedClusterHoldsNoDeletion(t *testing.T) {
	f := newFixture(t, "orphaned")
	f.managedCluster("c-orphaned")
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-orphaned", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	f.kubectl("-n", "orphaned", "delete", "app", "demo", "--wait=false")
	f.waitApp("demo", "waiting for its cluster's confirmation", readyMessageIs("waiting for 1 of 1 clusters to confirm removal"))
	f.stillThere("demo", "while its cluster exists and has not confirmed")
	f.kubectl("delete", "managedcluster", "c-orphaned")
	f.waitGone("demo")
}

// A resume request written by another client than kubectl-flotilla (a
// time with a fraction and an offset, an empty group list) is kept as
// written: the hub's admission policy would refuse the planner a copy that
// differs, and every status write after it.
func TestResumeRequestKeptAsWritten(t *testing.T) {
	f := newFixture(t, "raw-resume")
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-raw", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	// alice (not the planner's user) may resume in this namespace.
	f.kubectl("-n", "raw-resume", "create", "role", "resumer", "--verb=get,patch,update", "--resource=applications.core.oam.dev,applications.core.oam.dev/status")
	f.kubectl("-n", "raw-resume", "create", "rolebinding", "alice-resumes", "--role=resumer", "--user=alice")
	f.kubectl("-n", "raw-resume", "--as=alice", "patch", "app", "demo", "--subresource=status", "--type=merge", "-p",
		`{"status":{"workflow":{"resume":{"id":"r1","step":"deploy-prod","decision":"approve","user":"alice","groups":[],"time":"2026-01-01T10:00:00.5+02:00"}}}}`)
	f.kubectl("-n", "raw-resume", "patch", "app", "demo", "--type=json", `-p=[{"op":"add","path":"/spec/components/0/properties/note","value":"edited"}]`)
	gen := f.app("demo").Generation
	app := f.waitApp("demo", "its status written after the edit", func(a *v1beta1.Application) bool { return a.Status.ObservedGeneration == gen })
	if r := app.Status.Workflow.Resume; r == nil || r.ID != "r1" {
		t.Errorf("the resume request was not kept: %+v", r)
	}
}
