package planner_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nats-io/nats.go"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/planner"
)

// Everything a user can get wrong: the Application says exactly what, no
// step event goes out, and the planner keeps serving other applications.
func TestBadInputIsReportedAndNothingIsPublished(t *testing.T) {
	tests := []struct {
		ns     string
		edit   func(manifest string) string
		reason string
		msg    string
	}{
		{"no-workflow", func(m string) string { return strings.Replace(m, "ref: deploy-demo", "ref: deploy-nope", 1) },
			"WorkflowNotFound", `Workflow "deploy-nope" referenced by spec.workflow.ref not found in namespace "no-workflow"`},
		{"no-policy", func(m string) string {
			return strings.Replace(m, `policies: ["cluster-prod"]`, `policies: ["cluster-staging"]`, 1)
		},
			"PolicyNotFound", `policy "cluster-staging" used by step "deploy-prod" not found`},
		{"policy-type", func(m string) string { return strings.Replace(m, "type: topology", "type: override", 1) },
			"UnsupportedPolicyType", `policy "cluster-test" used by step "deploy-test" has type "override"`},
		{"component-type", func(m string) string { return strings.Replace(m, "type: ref-objects", "type: webservice", 1) },
			"UnsupportedComponentType", `component "demo" has type "webservice"`},
		{"no-object", func(m string) string {
			return strings.Replace(m, "            name: demo", "            name: demo-missing", 1)
		},
			"ObjectNotFound", `Deployment demo-missing referenced by component "demo" not found in namespace "no-object"`},
		{"step-type", func(m string) string {
			return strings.Replace(m, "  - type: deploy\n    name: deploy-prod", "  - type: notify-slack\n    name: deploy-prod", 1)
		},
			"UnknownStepType", `step "deploy-prod" has unknown type "notify-slack"`},
		{"duplicate-step", func(m string) string { return strings.Replace(m, "name: deploy-prod", "name: deploy-test", 1) },
			"DuplicateStepName", `step name "deploy-test" is used twice`},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			g := newFixture(t, tt.ns)
			g.startPlanner()
			g.applyYAML(tt.edit(g.seed()))
			app := g.waitApp("demo", "failed with "+tt.reason, func(a *v1beta1.Application) bool {
				c := meta.FindStatusCondition(a.Status.Conditions, planner.ConditionReady)
				return c != nil && c.Reason == tt.reason
			})
			c := meta.FindStatusCondition(app.Status.Conditions, planner.ConditionReady)
			if app.Status.Phase != v1beta1.PhaseWorkflowFailed || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, tt.msg) {
				t.Errorf("phase %s, Ready %s %s %q; want workflowFailed, False, %s containing %q", app.Status.Phase, c.Status, c.Reason, c.Message, tt.reason, tt.msg)
			}
			if evs := g.stepEvents("demo"); len(evs) != 0 {
				t.Errorf("published %v for a broken application", summary(evs))
			}
		})
	}

}

// Fixing what was missing starts the release at once (the Workflow is
// watched: an hour's resync cannot be what starts it), and nothing was lost.
func TestFixingBadInputStartsTheRelease(t *testing.T) {
	f := newFixture(t, "fixed-later")
	f.startPlannerWith(planner.Options{Resync: time.Hour}, nil)
	f.applyYAML(f.seed("app-meta.yaml", "policy-topology.yaml", "app.yaml"))
	f.waitApp("demo", "missing its Workflow", func(a *v1beta1.Application) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, planner.ConditionReady)
		return c != nil && c.Reason == "WorkflowNotFound"
	})
	if evs := f.stepEvents("demo"); len(evs) != 0 {
		t.Fatalf("published %v without a Workflow", summary(evs))
	}
	f.applyYAML(f.seed("workflow.yaml"))
	if got := summary(f.waitStepEvents("demo", 1)); got[0] != "started deploy-test" {
		t.Errorf("step events %v", got)
	}
	f.waitApp("demo", "running its workflow", phaseIs(v1beta1.PhaseRunningWorkflow))
}

// Corrupt reports are terminated, not redelivered, and the planner goes on.
func TestCorruptReportsAreTerminated(t *testing.T) {
	f := newFixture(t, "after-corrupt")
	// The server says when a consumer terminates a message, and why.
	terminated := make(chan *nats.Msg, 8)
	f.managedCluster("c1")
	sub, err := f.js.Conn().ChanSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+bus.StreamStatus+"."+bus.ReportLane(bus.ConsumerPlanner, "c1"), terminated)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	f.startPlanner()
	ack, err := f.js.Publish(f.ctx, bus.StatusSubject("c1", "x", "y"), []byte("{not an event"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-terminated:
		var adv struct {
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries uint64 `json:"deliveries"`
			Reason     string `json:"reason"`
		}
		if err := json.Unmarshal(m.Data, &adv); err != nil {
			t.Fatal(err)
		}
		if adv.StreamSeq != ack.Sequence || adv.Deliveries != 1 || !strings.Contains(adv.Reason, "invalid event") {
			t.Errorf("terminated %+v; want the corrupt report (sequence %d) at its first delivery, with the decoder's reason", adv, ack.Sequence)
		}
	case <-time.After(wait):
		t.Fatal("the corrupt report was not terminated")
	}
	// The planner goes on: a report after the corrupt one moves its application.
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
}

// A release waiting for a referenced object starts when the object is
// created, not on the next resync.
func TestCreatingTheMissingObjectStartsTheRelease(t *testing.T) {
	f := newFixture(t, "late-object")
	f.startPlannerWith(planner.Options{Resync: time.Hour}, nil)
	f.applyYAML(f.seed("policy-topology.yaml", "workflow.yaml", "app.yaml"))
	f.waitApp("demo", "missing its Deployment", func(a *v1beta1.Application) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, planner.ConditionReady)
		return c != nil && c.Reason == "ObjectNotFound"
	})
	// With an hour's resync, only watching the Deployment can start it
	// within the test's time.
	f.applyYAML(f.seed("app-meta.yaml"))
	f.waitStepEvents("demo", 1)
}
