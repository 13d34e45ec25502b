package workflow

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func seedSteps() []StepSpec {
	return []StepSpec{
		{Name: "deploy-test", Type: StepTypeDeploy, Policies: []string{"cluster-test"}, Auto: true},
		{Name: "deploy-prod", Type: StepTypeDeploy, Policies: []string{"cluster-prod"}, Auto: false},
	}
}

func ref() events.AppRef {
	return events.AppRef{Namespace: "demo", Application: "demo", UID: "u", Release: "demo-v1", Revision: 1}
}

// step is one input and what must come out of it.
type step struct {
	at    time.Duration // after t0
	in    Input
	want  []string // "<verb> <step>"
	phase Phase    // run phase after
}

func runSteps(t *testing.T, specs []StepSpec, steps []step) *Run {
	t.Helper()
	r := NewRun(ref(), specs, t0)
	for i, st := range steps {
		got := r.Apply(t0.Add(st.at), st.in)
		var names []string
		for _, tr := range got {
			names = append(names, verbOf(tr.Type)+" "+r.Steps[tr.Index].Name)
		}
		if !slices.Equal(names, st.want) {
			t.Fatalf("input %d (%T %+v): transitions %q, want %q", i, st.in, st.in, names, st.want)
		}
		if st.phase != "" && r.Phase != st.phase {
			t.Fatalf("input %d: run phase %s, want %s", i, r.Phase, st.phase)
		}
	}
	return r
}

func verbOf(typ string) string {
	p := strings.Split(typ, ".")
	return p[len(p)-2]
}

func healthy(c string) ClusterReport {
	return ClusterReport{Cluster: c, Phase: events.ClusterApplied, Healthy: true}
}

func TestSeedScenario(t *testing.T) {
	r := runSteps(t, seedSteps(), []step{
		{0, Tick{}, []string{"started deploy-test"}, RunRunning},
		{time.Second, Dispatched{Step: "deploy-test", Clusters: []string{"c-test"}}, nil, RunRunning},
		{2 * time.Second, ClusterReport{Cluster: "c-test", Phase: events.ClusterApplied, Healthy: false}, nil, RunRunning},
		{3 * time.Second, healthy("c-test"), []string{"succeeded deploy-test", "suspended deploy-prod"}, RunSuspending},
		{4 * time.Second, Tick{}, nil, RunSuspending},
		{time.Minute, Decision{Step: "deploy-prod", Approve: true, By: "alice"}, []string{"started deploy-prod"}, RunRunning},
		{61 * time.Second, Dispatched{Step: "deploy-prod", Clusters: []string{"c-prod"}}, nil, RunRunning},
		{62 * time.Second, healthy("c-prod"), []string{"succeeded deploy-prod"}, RunSucceeded},
	})
	if got := r.DeployedClusters(); !slices.Equal(got, []string{"c-prod", "c-test"}) {
		t.Errorf("deployed clusters %v", got)
	}
	if !r.End.Equal(t0.Add(62 * time.Second)) {
		t.Errorf("end %v", r.End)
	}
}

func TestSuspendedDeployStepSaysWhy(t *testing.T) {
	r := runSteps(t, seedSteps()[1:], []step{{0, Tick{}, []string{"suspended deploy-prod"}, RunSuspending}})
	s := r.Steps[0]
	if s.Message != `Waiting approval to the deploy step "deploy-prod"` || s.Reason != ReasonWaitingApproval || s.Phase != StepSuspending {
		t.Errorf("step %+v", s)
	}
	if r.Message != s.Message {
		t.Errorf("run message %q", r.Message)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name       string
		specs      []StepSpec
		steps      []step
		reason     string
		msgHas     string
		finalPhase Phase
	}{
		{
			name:  "cluster reports apply failure",
			specs: seedSteps(),
			steps: []step{
				{0, Tick{}, []string{"started deploy-test"}, RunRunning},
				{0, Dispatched{Step: "deploy-test", Clusters: []string{"c1", "c2"}}, nil, RunRunning},
				{0, healthy("c1"), nil, RunRunning},
				{0, ClusterReport{Cluster: "c2", Phase: events.ClusterFailed, Message: `apply Deployment demo/demo: admission webhook denied`}, []string{"failed deploy-test"}, RunFailed},
			},
			reason: ReasonApplyFailed, msgHas: "cluster c2: apply Deployment demo/demo", finalPhase: RunFailed,
		},
		{
			name:  "dispatch names an unknown cluster",
			specs: seedSteps(),
			steps: []step{
				{0, Tick{}, []string{"started deploy-test"}, RunRunning},
				{0, Dispatched{Step: "deploy-test", Reason: "ClusterNotFound", Error: `policy "cluster-test" names cluster "nope", which is not a ManagedCluster`}, []string{"failed deploy-test"}, RunFailed},
			},
			reason: "ClusterNotFound", msgHas: `"nope"`, finalPhase: RunFailed,
		},
		{
			name:  "timeout",
			specs: []StepSpec{{Name: "deploy-test", Type: StepTypeDeploy, Auto: true, Timeout: time.Minute}},
			steps: []step{
				{0, Tick{}, []string{"started deploy-test"}, RunRunning},
				{59 * time.Second, Tick{}, nil, RunRunning},
				{time.Minute, Tick{}, []string{"failed deploy-test"}, RunFailed},
			},
			reason: ReasonTimeout, msgHas: "within 1m0s", finalPhase: RunFailed,
		},
		{
			name:  "rejected",
			specs: seedSteps()[1:],
			steps: []step{
				{0, Tick{}, []string{"suspended deploy-prod"}, RunSuspending},
				{0, Decision{Step: "deploy-prod", Approve: false, By: "bob", Reason: "error budget spent"}, []string{"failed deploy-prod"}, RunTerminated},
			},
			reason: ReasonRejected, msgHas: "rejected by bob: error budget spent", finalPhase: RunTerminated,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runSteps(t, tt.specs, tt.steps)
			var failed *Step
			for i := range r.Steps {
				if r.Steps[i].Phase == StepFailed {
					failed = &r.Steps[i]
				}
			}
			if failed == nil {
				t.Fatal("no failed step")
			}
			if failed.Reason != tt.reason || !strings.Contains(failed.Message, tt.msgHas) {
				t.Errorf("failed step reason %q message %q, want %q containing %q", failed.Reason, failed.Message, tt.reason, tt.msgHas)
			}
			for _, s := range r.Steps[slices.IndexFunc(r.Steps, func(s Step) bool { return s.Phase == StepFailed })+1:] {
				if s.Phase != StepSkipped {
					t.Errorf("step %s after the failure is %s, want skipped", s.Name, s.Phase)
				}
			}
			if r.Phase != tt.finalPhase || r.End.IsZero() {
				t.Errorf("run phase %s end %v", r.Phase, r.End)
			}
			// A finished run ignores everything but health reports.
			if got := r.Apply(t0.Add(time.Hour), Decision{Step: failed.Name, Approve: true}); got != nil {
				t.Errorf("finished run transitioned: %v", got)
			}
		})
	}
}

func TestInputsThatDoNotFitChangeNothing(t *testing.T) {
	r := runSteps(t, seedSteps(), []step{
		{0, Tick{}, []string{"started deploy-test"}, RunRunning},
		// Approval of a step that does not wait: stale.
		{0, Decision{Step: "deploy-prod", Approve: true}, nil, RunRunning},
		// Report before the dispatcher answered: recorded, step not done.
		{0, healthy("c-test"), nil, RunRunning},
		// Dispatch for another step.
		{0, Dispatched{Step: "deploy-prod", Clusters: []string{"c-prod"}}, nil, RunRunning},
		// The right dispatch: the earlier report already counts.
		{0, Dispatched{Step: "deploy-test", Clusters: []string{"c-test"}}, []string{"succeeded deploy-test", "suspended deploy-prod"}, RunSuspending},
		// A second dispatch answer for a step already done is ignored, even a failure.
		{0, Dispatched{Step: "deploy-test", Reason: ReasonDispatchFailed, Error: "late failure"}, nil, RunSuspending},
		// So is a failure report from a cluster not in the step.
		{0, ClusterReport{Cluster: "c-other", Phase: events.ClusterFailed}, nil, RunSuspending},
		// The approval, twice: counts once.
		{0, Decision{Step: "deploy-prod", Approve: true}, []string{"started deploy-prod"}, RunRunning},
		{0, Decision{Step: "deploy-prod", Approve: true}, nil, RunRunning},
		// The running step's answer, then a second, different one: the first stands.
		{0, Dispatched{Step: "deploy-prod", Clusters: []string{"c-prod"}}, nil, RunRunning},
		{0, Dispatched{Step: "deploy-prod", Clusters: []string{"c-elsewhere"}}, nil, RunRunning},
		{0, Dispatched{Step: "deploy-prod", Reason: ReasonDispatchFailed, Error: "late failure"}, nil, RunRunning},
	})
	if got := r.Steps[0].Clusters; !slices.Equal(got, []string{"c-test"}) {
		t.Errorf("deploy-test went to %v after a second answer, want [c-test]", got)
	}
	if got := r.Steps[1].Clusters; !slices.Equal(got, []string{"c-prod"}) {
		t.Errorf("deploy-prod went to %v after a second answer, want [c-prod]", got)
	}
	if r.Steps[0].Phase != StepSucceeded || r.Steps[1].Phase != StepRunning {
		t.Errorf("steps %s, %s after late answers", r.Steps[0].Phase, r.Steps[1].Phase)
	}
}

func TestSuspendStep(t *testing.T) {
	specs := []StepSpec{
		{Name: "bake", Type: StepTypeSuspend, Duration: 30 * time.Second, Message: "baking"},
		{Name: "hold", Type: StepTypeSuspend},
	}
	r := runSteps(t, specs, []step{
		{0, Tick{}, []string{"suspended bake"}, RunSuspending},
		{29 * time.Second, Tick{}, nil, RunSuspending},
		{30 * time.Second, Tick{}, []string{"succeeded bake", "suspended hold"}, RunSuspending},
	})
	if r.Steps[0].Message != "" || r.Steps[1].Reason != ReasonWaitingApproval {
		t.Errorf("steps %+v", r.Steps)
	}
	if !r.Deadline().IsZero() {
		t.Errorf("manual suspend has deadline %v", r.Deadline())
	}
	if got := r.Apply(t0.Add(time.Minute), Decision{Step: "hold", Approve: true}); len(got) != 1 || got[0].Type != events.TypeStepSucceeded {
		t.Errorf("resume: %v", got)
	}
	if r.Phase != RunSucceeded {
		t.Errorf("phase %s", r.Phase)
	}
}

func TestDeadline(t *testing.T) {
	r := NewRun(ref(), []StepSpec{{Name: "bake", Type: StepTypeSuspend, Duration: time.Minute, Timeout: 10 * time.Minute}}, t0)
	if !r.Deadline().IsZero() {
		t.Errorf("unstarted run has deadline")
	}
	r.Apply(t0, Tick{})
	if want := t0.Add(time.Minute); !r.Deadline().Equal(want) {
		t.Errorf("deadline %v, want %v", r.Deadline(), want)
	}
}

// A report that arrives late (redelivered after a newer one) changes nothing.
func TestLateReportsAreIgnored(t *testing.T) {
	r := NewRun(ref(), seedSteps()[:1], t0)
	r.Apply(t0, Tick{})
	r.Apply(t0, Dispatched{Step: "deploy-test", Clusters: []string{"c"}})
	newer := ClusterReport{Cluster: "c", Phase: events.ClusterApplied, Healthy: true, ObservedAt: t0.Add(2 * time.Second)}
	older := ClusterReport{Cluster: "c", Phase: events.ClusterApplied, Healthy: false, Message: "Replicas: 0/1", ObservedAt: t0.Add(time.Second)}
	if got := r.Apply(t0.Add(3*time.Second), newer); len(got) != 1 {
		t.Fatalf("healthy report: %v", got)
	}
	r.Apply(t0.Add(4*time.Second), older)
	if h := r.Health["c"]; !h.Healthy {
		t.Errorf("a late, older report overwrote the newer: %+v", h)
	}
}

func TestHoldTerminateRestart(t *testing.T) {
	r := runSteps(t, seedSteps(), []step{
		{0, Tick{}, []string{"started deploy-test"}, RunRunning},
		{0, Hold{By: "ops"}, nil, RunRunning}, // the running step goes on
		{0, Dispatched{Step: "deploy-test", Clusters: []string{"c"}}, nil, RunRunning},
		{0, healthy("c"), []string{"succeeded deploy-test"}, RunSuspending},
		{time.Minute, Tick{}, nil, RunSuspending},
	})
	if !strings.Contains(r.Message, `suspended by ops before step "deploy-prod"`) || r.Steps[1].Phase != StepPending {
		t.Fatalf("held run: %q, step %s", r.Message, r.Steps[1].Phase)
	}
	if got := r.Apply(t0.Add(2*time.Minute), Unhold{}); len(got) != 1 || got[0].Type != events.TypeStepSuspended {
		t.Fatalf("unhold: %v", got)
	}
	again := r.Restart(t0.Add(3 * time.Minute))
	if again.Attempt != 1 || again.Steps[0].Phase != StepPending || !again.Health["c"].Healthy {
		t.Errorf("restart: attempt %d, first step %s, health %v", again.Attempt, again.Steps[0].Phase, again.Health)
	}
	got := r.Apply(t0.Add(4*time.Minute), Terminate{By: "ops", Reason: "bad build"})
	if len(got) != 1 || got[0].Type != events.TypeStepFailed || r.Phase != RunTerminated || r.Steps[1].Reason != ReasonTerminated || r.Steps[1].Message != "terminated by ops: bad build" {
		t.Errorf("terminate: %v, run %s, step %+v", got, r.Phase, r.Steps[1])
	}
}

// A cluster healthy from an earlier step's work does not finish a later
// step that deploys to it again.
func TestHealthCountsForItsStep(t *testing.T) {
	specs := []StepSpec{
		{Name: "first", Type: StepTypeDeploy, Auto: true},
		{Name: "second", Type: StepTypeDeploy, Auto: true},
	}
	r := NewRun(ref(), specs, t0)
	r.Apply(t0, Tick{})
	r.Apply(t0, Dispatched{Step: "first", Clusters: []string{"c"}})
	r.Apply(t0.Add(time.Second), ClusterReport{Cluster: "c", Step: "first", Phase: events.ClusterApplied, Healthy: true, ObservedAt: t0.Add(time.Second)})
	if got := r.Apply(t0.Add(2*time.Second), Dispatched{Step: "second", Clusters: []string{"c"}}); len(got) != 0 {
		t.Fatalf("second step finished on the first step's report: %v", got)
	}
	got := r.Apply(t0.Add(3*time.Second), ClusterReport{Cluster: "c", Step: "second", Phase: events.ClusterApplied, Healthy: true, ObservedAt: t0.Add(3 * time.Second)})
	if len(got) != 1 || got[0].Type != events.TypeStepSucceeded || r.Phase != RunSucceeded {
		t.Fatalf("second step's own report: %v, run %s", got, r.Phase)
	}
}
