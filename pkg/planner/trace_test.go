package planner_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// recording is an in-process span recorder (the real Jaeger is checked end
// to end; this checks the planner's IDs and parenthood).
func recording(t *testing.T) (*tracetest.SpanRecorder, telemetry.Instruments, *prometheus.Registry) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithIDGenerator(telemetry.IDGenerator()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reg := prometheus.NewRegistry()
	return rec, telemetry.Instruments{Tracer: tp.Tracer("test"), Metrics: reg}, reg
}

func spanNamed(spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// A step approved after the planner that started the release is gone still
// joins the release's trace: the new replica makes the step's and the
// release's spans with the IDs the first one's events announced.
func TestReleaseTraceOutlivesThePlanner(t *testing.T) {
	f := newFixture(t, "traced")
	recA, insA, _ := recording(t)
	stopA := f.startPlannerWith(planner.Options{Instruments: insA}, nil)
	f.applyYAML(f.seed())
	started := f.waitStepEvents("demo", 1)
	first := stepData(t, started[0])
	f.report(first, "managedcluster-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval", phaseIs(v1beta1.PhaseWorkflowSuspending))
	stopA()

	evs := f.stepEvents("demo")
	tid := telemetry.ReleaseTraceID(first.UID, 1)
	stepSpan := map[string]trace.SpanID{}
	for _, e := range evs {
		sc := telemetry.SpanContextOf(e.TraceParent, e.TraceState)
		if sc.TraceID() != tid || !sc.IsSampled() {
			t.Fatalf("event %s: traceparent %q, want trace %s, sampled", e.ID, e.TraceParent, tid)
		}
		d := stepData(t, e)
		if prev, ok := stepSpan[d.Step]; ok && prev != sc.SpanID() {
			t.Errorf("events of step %s name spans %s and %s", d.Step, prev, sc.SpanID())
		}
		stepSpan[d.Step] = sc.SpanID()
	}
	if stepSpan["deploy-test"] == stepSpan["deploy-prod"] {
		t.Fatal("both steps name one span")
	}
	testStep := spanNamed(recA.Ended(), "step deploy-test")
	if testStep == nil || testStep.SpanContext().SpanID() != stepSpan["deploy-test"] || testStep.Parent().SpanID() != telemetry.ReleaseSpanID(tid) {
		t.Fatalf("planner A's step span: %v", testStep)
	}
	if spanNamed(recA.Ended(), "release") != nil {
		t.Error("the release's span was made before the release ended")
	}

	// Later, another replica; the gate approves, production turns healthy.
	recB, insB, regB := recording(t)
	f.startPlannerWith(planner.Options{Instruments: insB}, nil)
	prod := stepData(t, evs[len(evs)-1])
	dec := events.New(events.RunID(prod.AppRef)+".deploy-prod.decided", events.SourceGate, events.TypeStepApproved, "traced/demo",
		&events.StepDecisionData{AppRef: prod.AppRef, Step: "deploy-prod", Approvals: []events.Approval{{Approver: "alice", Decision: events.DecisionApprove, Via: "http", Time: time.Now()}}})
	if _, err := bus.Publish(f.ctx, f.js, bus.GateSubject("decisions", "traced", "demo"), dec); err != nil {
		t.Fatal(err)
	}
	prodStarted := f.waitStepEvents("demo", 4)[3]
	f.report(stepData(t, prodStarted), "managedcluster-prod", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "running", phaseIs(v1beta1.PhaseRunning))

	var root, step sdktrace.ReadOnlySpan
	eventually.True(t, wait, "planner B's release and deploy-prod spans", func() (bool, error) {
		root, step = spanNamed(recB.Ended(), "release"), spanNamed(recB.Ended(), "step deploy-prod")
		return root != nil && step != nil, fmt.Errorf("%d spans ended", len(recB.Ended()))
	})
	if root.SpanContext().TraceID() != tid || root.SpanContext().SpanID() != telemetry.ReleaseSpanID(tid) || root.Parent().IsValid() {
		t.Errorf("release span %s/%s parent %v", root.SpanContext().TraceID(), root.SpanContext().SpanID(), root.Parent())
	}
	if step.SpanContext().SpanID() != stepSpan["deploy-prod"] || step.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("deploy-prod span %s under %s, want %s under the release", step.SpanContext().SpanID(), step.Parent().SpanID(), stepSpan["deploy-prod"])
	}
	// The release began while planner A ran, and the spans say so.
	if root.StartTime().After(testStep.StartTime()) {
		t.Errorf("release span starts %v, after its first step (%v)", root.StartTime(), testStep.StartTime())
	}
	attrs := map[string]string{}
	for _, kv := range step.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if attrs["flotilla.approver"] != "alice" || attrs["flotilla.approval.channel"] != "http" || attrs["flotilla.phase"] != "succeeded" {
		t.Errorf("deploy-prod span attributes %v", attrs)
	}
	if got := gatheredSum(t, regB, "flotilla_releases_finished_total"); got != 1 {
		t.Errorf("releases finished on planner B: %v, want 1", got)
	}
}

// gatheredSum adds the values of every counter series of a metric family.
func gatheredSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// A release replaced while its step runs ends in the trace, with the step:
// what the dispatcher and agents did under them keeps its parents.
func TestSupersededReleaseClosesItsSpans(t *testing.T) {
	f := newFixture(t, "superseded")
	rec, ins, reg := recording(t)
	f.startPlannerWith(planner.Options{Instruments: ins}, nil)
	f.applyYAML(f.seed())
	first := stepData(t, f.waitStepEvents("demo", 1)[0])
	f.kubectl("-n", "superseded", "annotate", "--overwrite", "app", "demo", "app.oam.dev/publishVersion=version2")
	f.waitApp("demo", "at release 2", func(a *v1beta1.Application) bool {
		return a.Status.LatestRevision != nil && a.Status.LatestRevision.Revision == 2
	})
	tid := telemetry.ReleaseTraceID(first.UID, 1)
	var root, step sdktrace.ReadOnlySpan
	eventually.True(t, wait, "release 1's release and step spans", func() (bool, error) {
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() != tid {
				continue
			}
			switch s.Name() {
			case "release":
				root = s
			case "step deploy-test":
				step = s
			}
		}
		return root != nil && step != nil, fmt.Errorf("release span %v, step span %v", root != nil, step != nil)
	})
	phase := func(s sdktrace.ReadOnlySpan) string {
		for _, kv := range s.Attributes() {
			if kv.Key == telemetry.AttrPhase {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	if phase(root) != "superseded" || phase(step) != "superseded" || step.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("release span %q, step span %q under %s (release %s)", phase(root), phase(step), step.Parent().SpanID(), root.SpanContext().SpanID())
	}
	if got := gatheredSum(t, reg, "flotilla_releases_started_total"); got != 2 {
		t.Errorf("releases started %v, want 2", got)
	}
	if got := gatheredSum(t, reg, "flotilla_releases_finished_total"); got != 1 {
		t.Errorf("releases finished %v, want 1 (superseded)", got)
	}
}
