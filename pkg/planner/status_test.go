package planner

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func seedApp() *v1beta1.Application {
	return &v1beta1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "demo", UID: "u1", Generation: 3},
		Spec:       v1beta1.ApplicationSpec{Components: []v1beta1.ApplicationComponent{{Name: "demo", Type: "ref-objects"}}},
	}
}

// seedRecord is the seed's release driven through inputs (pure workflow).
func seedRecord(t *testing.T, inputs ...workflow.Input) *Record {
	t.Helper()
	ref := events.AppRef{Namespace: "demo", Application: "demo", UID: "u1", Release: "demo-v1", Revision: 1, PublishVersion: "version1"}
	run := workflow.NewRun(ref, []workflow.StepSpec{
		{Name: "deploy-test", Type: workflow.StepTypeDeploy, Policies: []string{"cluster-test"}, Auto: true},
		{Name: "deploy-prod", Type: workflow.StepTypeDeploy, Policies: []string{"cluster-prod"}},
	}, t0)
	run.Apply(t0, workflow.Tick{})
	for i, in := range inputs {
		run.Apply(t0.Add(time.Duration(i+1)*time.Second), in)
	}
	return &Record{UID: "u1", Run: run}
}

func ok(c string) workflow.ClusterReport {
	return workflow.ClusterReport{Cluster: c, Phase: events.ClusterApplied, Healthy: true, ObservedAt: t0.Add(time.Hour)}
}

func TestComputeStatus(t *testing.T) {
	dispatched := func(step, c string) workflow.Dispatched {
		return workflow.Dispatched{Step: step, Clusters: []string{c}}
	}
	approve := workflow.Decision{Step: "deploy-prod", Approve: true, By: "alice"}
	deleting := seedApp()
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	tests := []struct {
		name    string
		app     *v1beta1.Application
		rec     func(*testing.T) *Record
		refused *problem.Error
		phase   v1beta1.ApplicationPhase
		status  metav1.ConditionStatus
		reason  string
		msg     string
		// services is "<cluster>:<healthy>:<message>" per entry.
		services []string
	}{
		{"first release not cut yet", seedApp(), func(*testing.T) *Record { return nil }, nil,
			v1beta1.PhaseStarting, metav1.ConditionUnknown, ReasonProgressing, "cutting the first release", nil},
		{"bad input", seedApp(), func(*testing.T) *Record { return nil }, problem.New("PolicyNotFound", `policy "x" not found`),
			v1beta1.PhaseWorkflowFailed, metav1.ConditionFalse, "PolicyNotFound", `policy "x" not found`, nil},
		{"deploying to test", seedApp(), func(t *testing.T) *Record { return seedRecord(t, dispatched("deploy-test", "c-test")) }, nil,
			v1beta1.PhaseRunningWorkflow, metav1.ConditionFalse, ReasonProgressing, `running step "deploy-test" of release demo-v1`,
			[]string{"c-test:false:waiting for the cluster to report"}},
		{"waiting for approval", seedApp(), func(t *testing.T) *Record {
			return seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"))
		}, nil, v1beta1.PhaseWorkflowSuspending, metav1.ConditionFalse, workflow.ReasonWaitingApproval, `Waiting approval to the deploy step "deploy-prod"`,
			[]string{"c-test:true:"}},
		{"running healthy everywhere", seedApp(), func(t *testing.T) *Record {
			return seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"), approve, dispatched("deploy-prod", "c-prod"), ok("c-prod"))
		}, nil, v1beta1.PhaseRunning, metav1.ConditionTrue, ReasonSucceeded, "release demo-v1 runs healthy in 2 clusters",
			[]string{"c-prod:true:", "c-test:true:"}},
		{"unhealthy after it succeeded", seedApp(), func(t *testing.T) *Record {
			rec := seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"), approve, dispatched("deploy-prod", "c-prod"), ok("c-prod"))
			rec.Run.Apply(t0.Add(2*time.Hour), workflow.ClusterReport{Cluster: "c-prod", Phase: events.ClusterApplied, Message: "Deployment demo is InProgress: Available: 0/1", ObservedAt: t0.Add(2 * time.Hour)})
			return rec
		}, nil, v1beta1.PhaseUnhealthy, metav1.ConditionFalse, ReasonUnhealthy, "cluster c-prod: Deployment demo is InProgress: Available: 0/1",
			[]string{"c-prod:false:Deployment demo is InProgress: Available: 0/1", "c-test:true:"}},
		{"a cluster cut off after it succeeded: its health is unknown, not its last report", seedApp(), func(t *testing.T) *Record {
			return seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"), approve, dispatched("deploy-prod", "c-prod"), ok("c-prod"))
		}, nil, v1beta1.PhaseUnhealthy, metav1.ConditionUnknown, ReasonClusterUnavailable,
			"health unknown: cluster c-prod is unavailable since 2026-12-02T12:00:00Z (ManagedClusterLeaseUpdateStopped)",
			[]string{"c-prod:false:health unknown: cluster c-prod is unavailable since 2026-12-02T12:00:00Z (ManagedClusterLeaseUpdateStopped)", "c-test:true:"}},
		{"cut off while it waits for approval", seedApp(), func(t *testing.T) *Record {
			return seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"))
		}, nil, v1beta1.PhaseWorkflowSuspending, metav1.ConditionFalse, workflow.ReasonWaitingApproval, `Waiting approval to the deploy step "deploy-prod"`,
			[]string{"c-test:false:health unknown: cluster c-test is unavailable (ManagedClusterLeaseUpdateStopped)"}},
		{"failed", seedApp(), func(t *testing.T) *Record {
			return seedRecord(t, dispatched("deploy-test", "c-test"), workflow.ClusterReport{Cluster: "c-test", Phase: events.ClusterFailed, Message: "apply Deployment demo: denied", ObservedAt: t0.Add(time.Hour)})
		}, nil, v1beta1.PhaseWorkflowFailed, metav1.ConditionFalse, ReasonStepFailed, "denied", []string{"c-test:false:apply Deployment demo: denied"}},
		{"terminated", seedApp(), func(t *testing.T) *Record {
			return seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"), workflow.Decision{Step: "deploy-prod", By: "bob", Reason: "not today"})
		}, nil, v1beta1.PhaseWorkflowTerminated, metav1.ConditionFalse, workflow.ReasonTerminated, "bob", []string{"c-test:true:"}},
		{"deleting", deleting, func(t *testing.T) *Record {
			rec := seedRecord(t, dispatched("deploy-test", "c-test"), ok("c-test"))
			rec.Placed, rec.Deleting = []string{"c-test"}, true
			return rec
		}, nil, v1beta1.PhaseDeleting, metav1.ConditionFalse, ReasonDeleting, "waiting for 1 of 1 clusters to confirm removal", []string{"c-test:true:"}},
	}
	// The clusters cut off (their ManagedCluster's AVAILABLE), by case.
	outages := map[string]map[string]Outage{
		"a cluster cut off after it succeeded: its health is unknown, not its last report": {
			"c-prod": {Since: t0.Add(2 * time.Hour), Status: metav1.ConditionUnknown, Reason: "ManagedClusterLeaseUpdateStopped"}},
		"cut off while it waits for approval": {"c-test": {Status: metav1.ConditionUnknown, Reason: "ManagedClusterLeaseUpdateStopped"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := computeStatus(tt.app, tt.rec(t), tt.refused, t0.Add(3*time.Hour), outages[tt.name])
			if st.Phase != tt.phase {
				t.Errorf("phase %s, want %s", st.Phase, tt.phase)
			}
			ready := meta.FindStatusCondition(st.Conditions, ConditionReady)
			if ready == nil {
				t.Fatal("no Ready condition")
			}
			if ready.Status != tt.status || ready.Reason != tt.reason || !strings.Contains(ready.Message, tt.msg) {
				t.Errorf("Ready %s %s %q, want %s %s containing %q", ready.Status, ready.Reason, ready.Message, tt.status, tt.reason, tt.msg)
			}
			if ready.ObservedGeneration != tt.app.Generation || st.ObservedGeneration != tt.app.Generation {
				t.Errorf("observed generation %d/%d, want %d", ready.ObservedGeneration, st.ObservedGeneration, tt.app.Generation)
			}
			if !ready.LastTransitionTime.Time.Equal(t0.Add(3 * time.Hour)) {
				t.Errorf("Ready changed at %v, want the time given (%v)", ready.LastTransitionTime, t0.Add(3*time.Hour))
			}
			var services []string
			for _, s := range st.Services {
				services = append(services, s.Cluster+":"+boolText(s.Healthy)+":"+s.Message)
			}
			if strings.Join(services, ",") != strings.Join(tt.services, ",") {
				t.Errorf("services %q, want %q", services, tt.services)
			}
		})
	}
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// The same record and time give the same status: a reconcile that changed
// nothing writes nothing.
func TestComputeStatusIsPure(t *testing.T) {
	rec := seedRecord(t, workflow.Dispatched{Step: "deploy-test", Clusters: []string{"c-test"}}, ok("c-test"))
	a := computeStatus(seedApp(), rec, nil, t0, nil)
	app := seedApp()
	app.Status = a
	b := computeStatus(app, rec, nil, t0.Add(time.Hour), nil)
	ra, rb := meta.FindStatusCondition(a.Conditions, ConditionReady), meta.FindStatusCondition(b.Conditions, ConditionReady)
	if !ra.LastTransitionTime.Equal(&rb.LastTransitionTime) {
		t.Errorf("an unchanged Ready condition moved its transition time: %v then %v", ra.LastTransitionTime, rb.LastTransitionTime)
	}
}

// A resume request stays in the computed status only while its step waits.
func TestComputeStatusKeepsAResumeRequestWhileItsStepWaits(t *testing.T) {
	waiting := seedRecord(t, workflow.Dispatched{Step: "deploy-test", Clusters: []string{"c-test"}}, ok("c-test"))
	app := seedApp()
	app.Status.Workflow = &v1beta1.WorkflowStatus{Resume: &v1beta1.ResumeRequest{ID: "r1", Step: "deploy-prod", User: "alice"}}
	if st := computeStatus(app, waiting, nil, t0, nil); st.Workflow.Resume == nil || st.Workflow.Resume.ID != "r1" {
		t.Errorf("resume request of the waiting step dropped: %+v", st.Workflow.Resume)
	}
	app.Status.Workflow.Resume.Step = "deploy-test"
	if st := computeStatus(app, waiting, nil, t0, nil); st.Workflow.Resume != nil {
		t.Errorf("resume request of a step that does not wait kept: %+v", st.Workflow.Resume)
	}
}
