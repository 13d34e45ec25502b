package planner

import (
	"slices"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/telemetry"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

func spanNames(fx effects) []string {
	var out []string
	for _, s := range fx.spans {
		out = append(out, s.Name)
	}
	return out
}

// What a change implies for the trace is data, derived from the change.
func TestTraceEffects(t *testing.T) {
	p := &Planner{tracer: telemetry.NoopTracer()}
	traced := func(t *testing.T, inputs ...workflow.Input) *Record {
		rec := seedRecord(t, inputs...)
		rec.TraceID = telemetry.ReleaseTraceID(rec.UID, 1).String()
		return rec
	}
	dispatched := workflow.Dispatched{Step: "deploy-test", Clusters: []string{"c-test"}}

	t.Run("a step that ended", func(t *testing.T) {
		rec := traced(t, dispatched)
		tr := rec.Run.Apply(t0.Add(time.Minute), ok("c-test"))
		fx := p.traceTransitions(rec, tr)
		if got := spanNames(fx); !slices.Equal(got, []string{"step deploy-test"}) {
			t.Fatalf("spans %v", got)
		}
		if len(fx.steps) != 1 || fx.steps[0].typ != workflow.StepTypeDeploy || fx.steps[0].phase != "succeeded" || fx.steps[0].seconds <= 0 {
			t.Errorf("step durations %+v", fx.steps)
		}
		if rec.TraceDone || fx.finished != nil {
			t.Error("the release ended with its first step")
		}
		if fx.spans[0].ID != rec.stepContext(0).SpanID() || fx.spans[0].Parent.SpanID() != rec.rootContext().SpanID() {
			t.Error("the step's span is not the one its events announced, under the release's")
		}
	})
	t.Run("the run that ended", func(t *testing.T) {
		rec := traced(t, dispatched, ok("c-test"), workflow.Decision{Step: "deploy-prod", Approve: true, By: "alice"},
			workflow.Dispatched{Step: "deploy-prod", Clusters: []string{"c-prod"}})
		tr := rec.Run.Apply(t0.Add(time.Hour), ok("c-prod"))
		fx := p.traceTransitions(rec, tr)
		if got := spanNames(fx); !slices.Equal(got, []string{"step deploy-prod", "release"}) {
			t.Fatalf("spans %v", got)
		}
		if !rec.TraceDone || !slices.Equal(fx.finished, []string{"succeeded"}) {
			t.Errorf("trace done %v, finished %v", rec.TraceDone, fx.finished)
		}
		if again := p.traceTransitions(rec, nil); len(again.spans) != 0 || len(again.finished) != 0 {
			t.Errorf("the release ended twice: %v", spanNames(again))
		}
	})
	t.Run("superseded while a step runs", func(t *testing.T) {
		rec := traced(t, dispatched)
		fx := p.endRelease(rec, "superseded")
		if got := spanNames(fx); !slices.Equal(got, []string{"step deploy-test", "release"}) {
			t.Fatalf("spans %v", got)
		}
		for _, s := range fx.spans {
			if s.Err == "" || !s.End.IsZero() {
				t.Errorf("span %s: error %q, end %v; want it ended now, as superseded", s.Name, s.Err, s.End)
			}
		}
		if len(fx.steps) != 0 {
			t.Errorf("a cut step counted a duration: %+v", fx.steps)
		}
	})
	t.Run("an unsampled release makes no root span", func(t *testing.T) {
		rec := traced(t, dispatched)
		rec.TraceUnsampled = true
		fx := p.endRelease(rec, "deleted")
		if slices.Contains(spanNames(fx), "release") || !slices.Equal(fx.finished, []string{"deleted"}) {
			t.Errorf("spans %v, finished %v", spanNames(fx), fx.finished)
		}
	})
	t.Run("effects add up", func(t *testing.T) {
		var fx effects
		fx.add(effects{started: 1, finished: []string{"superseded"}, spans: []telemetry.Span{{Name: "a"}}})
		fx.add(effects{started: 1, steps: []stepEnded{{typ: "deploy"}}})
		if fx.started != 2 || len(fx.finished) != 1 || len(fx.spans) != 1 || len(fx.steps) != 1 {
			t.Errorf("%+v", fx)
		}
	})
}
