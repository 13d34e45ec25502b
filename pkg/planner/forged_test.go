package planner_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// terminations are the server's advisories of messages a consumer of the
// planner terminated.
type terminations chan *nats.Msg

func (f *fixture) watchTerminations(stream string) terminations {
	f.t.Helper()
	ch := make(chan *nats.Msg, 16)
	sub, err := f.js.Conn().ChanSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+stream+".*", ch)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

// expect waits for the termination of the message at seq, with a reason
// containing why.
func (tc terminations) expect(t *testing.T, seq uint64, why string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-tc:
			var adv struct {
				StreamSeq uint64 `json:"stream_seq"`
				Reason    string `json:"reason"`
			}
			if err := json.Unmarshal(m.Data, &adv); err != nil {
				t.Fatal(err)
			}
			if adv.StreamSeq != seq {
				continue
			}
			if !strings.Contains(adv.Reason, why) {
				t.Errorf("message %d terminated for %q, want %q", seq, adv.Reason, why)
			}
			return
		case <-deadline:
			t.Fatalf("message %d was not terminated", seq)
		}
	}
}

// A cluster speaks only for itself: on its own status subjects it may
// report on its own work, never decide a step, answer for the dispatcher or
// report as another cluster. Each forgery is terminated and nothing moves.
func TestForgedReportsMoveNothing(t *testing.T) {
	f := newFixture(t, "forged")
	status := f.watchTerminations(bus.StreamStatus)
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	prod := stepData(t, eventAt(t, f.waitStepEvents("demo", 3), 2))

	own := bus.StatusSubject("c-test", "forged", "demo")
	forge := func(typ string, data events.Data) uint64 {
		t.Helper()
		e := events.New(fmt.Sprintf("forged.%d", time.Now().UnixNano()), events.SourceAgent("c-test"), typ, "forged/demo", data)
		ack, err := bus.Publish(f.ctx, f.js, own, e)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	// The approval of production, on the test cluster's own subject.
	status.expect(t, forge(events.TypeStepApproved, &events.StepDecisionData{AppRef: prod.AppRef, Step: "deploy-prod",
		Approvals: []events.Approval{{Approver: "mallory", Decision: events.DecisionApprove, Via: "nats", Time: time.Now()}}}), "counts only from flotilla.gate.decisions.forged.demo")
	// The dispatcher's answer, with no clusters: a step succeeded with nothing deployed.
	status.expect(t, forge(events.TypeStepDispatched, &events.StepDispatchedData{AppRef: prod.AppRef, Step: "deploy-prod", Clusters: []string{}}),
		"counts only from flotilla.dispatch.forged.demo")
	// A report as another cluster.
	status.expect(t, forge(events.TypeClusterStatus, &events.ClusterStatusData{AppRef: d.AppRef, Cluster: "c-prod", Phase: events.ClusterFailed,
		Message: "forged", ObservedAt: time.Now()}), "counts only from flotilla.status.c-prod.forged.demo")

	app := f.app("demo")
	if app.Status.Phase != v1beta1.PhaseWorkflowSuspending || len(app.Status.Workflow.Steps) != 2 || app.Status.Workflow.Steps[1].Phase != v1beta1.StepSuspending {
		t.Fatalf("a forgery moved the workflow: phase %s, steps %+v", app.Status.Phase, app.Status.Workflow.Steps)
	}
	for _, s := range app.Status.Services {
		if !s.Healthy {
			t.Errorf("a forged report changed %s's health: %+v", s.Cluster, s)
		}
	}
	if got := summary(f.stepEvents("demo")); len(got) != 3 {
		t.Errorf("step events %v after the forgeries", got)
	}
}

// One cluster's flood of reports on a release that never comes fills only
// its own lane: another cluster's report still moves its application, and
// the flood is dropped after a few tries, each with the reason.
func TestOneClustersFloodHoldsUpNoOther(t *testing.T) {
	f := newFixture(t, "flood")
	status := f.watchTerminations(bus.StreamStatus)
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.managedCluster("c-noisy")
	never := d.AppRef
	never.Revision, never.Release = 99, "demo-v99"
	var first, last uint64
	for i := range 300 {
		st := &events.ClusterStatusData{AppRef: never, Cluster: "c-noisy", Phase: events.ClusterApplied, ObservedAt: time.Now()}
		ack, err := bus.Publish(f.ctx, f.js, bus.StatusSubject("c-noisy", "flood", "demo"),
			events.New(fmt.Sprintf("noisy.%d", i), events.SourceAgent("c-noisy"), events.TypeClusterStatus, "", st))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = ack.Sequence
		}
		last = ack.Sequence
	}
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval despite the flood", phaseIs(v1beta1.PhaseWorkflowSuspending))
	// Its storage is bounded too: past 256 reports on one subject, the
	// oldest go first.
	status.expect(t, first, "Unacknowledged message was deleted")
	// The oldest kept is among the lane's first 32 in flight: tried 8
	// times, then dropped with the reason.
	status.expect(t, last-255, "names release demo-v99 (revision 99) of flood/demo, which the planner does not have after 8 tries")
}
