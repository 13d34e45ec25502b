package planner

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// A release is one trace. Its root span and its step spans can last days (a
// step waiting for approval), longer than any planner process: so they are
// made when they end, with the start time and the span IDs the run state
// implies. Every event of a step carries the step span's context, so what
// the dispatcher, the gate and the agents do hangs under it before it exists.

// startTrace gives rec's (new) run its trace: the release's trace ID and
// whether it is sampled, decided once, here, as the root of the trace.
func (p *Planner) startTrace(rec *Record) {
	tid := telemetry.ReleaseTraceID(rec.Run.UID, rec.Run.Revision)
	rec.TraceID = tid.String()
	rec.TraceDone = false
	// The sampler decides on a root span it is shown but that is never
	// ended: the real one is made when the release ends, with the same IDs.
	_, probe := p.tracer.Start(telemetry.WithIDs(context.Background(), tid, rootSpanID(rec)), "release", trace.WithNewRoot())
	sc := probe.SpanContext()
	rec.TraceUnsampled = sc.IsValid() && !sc.IsSampled()
}

// rootSpanID is the release's root span (one per run: a restarted run has its own).
func rootSpanID(rec *Record) trace.SpanID {
	tid, _ := trace.TraceIDFromHex(rec.TraceID)
	if rec.Run.Attempt == 0 {
		return telemetry.ReleaseSpanID(tid)
	}
	return telemetry.SpanIDFor(fmt.Sprintf("%s/release/r%d", tid, rec.Run.Attempt))
}

func (rec *Record) traceFlags() trace.TraceFlags {
	if rec.TraceUnsampled {
		return 0
	}
	return trace.FlagsSampled
}

// rootContext is the span context of the release's root span.
func (rec *Record) rootContext() trace.SpanContext {
	tid, _ := trace.TraceIDFromHex(rec.TraceID)
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: rootSpanID(rec), TraceFlags: rec.traceFlags(), Remote: true})
}

// stepContext is the span context of step i of the current run.
func (rec *Record) stepContext(i int) trace.SpanContext {
	tid, _ := trace.TraceIDFromHex(rec.TraceID)
	sid := telemetry.SpanIDFor(fmt.Sprintf("%s/step/%s/%s", tid, events.RunID(rec.Run.AppRef), rec.Run.Steps[i].Name))
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: rec.traceFlags(), Remote: true})
}

func releaseAttrs(ref events.AppRef) []attribute.KeyValue {
	return []attribute.KeyValue{
		telemetry.AttrApplication.String(ref.Application), telemetry.AttrNamespace.String(ref.Namespace),
		telemetry.AttrRelease.String(ref.Release), telemetry.AttrRevision.Int64(ref.Revision),
		telemetry.AttrPublishVersion.String(ref.PublishVersion),
	}
}

// effects are the spans and metrics of what a change did. They are data,
// derived from the change, recorded by emit only once the change is saved:
// a lost compare-and-set did nothing, and records nothing.
type effects struct {
	spans []telemetry.Span
	steps []stepEnded
	// started counts runs started (a cut, a restart, a rollback);
	// finished the results of runs that ended.
	started  int
	finished []string
}

// stepEnded is a step's duration for the step histogram.
type stepEnded struct {
	typ, phase string
	seconds    float64
}

func (fx *effects) add(o effects) {
	fx.spans = append(fx.spans, o.spans...)
	fx.steps = append(fx.steps, o.steps...)
	fx.started += o.started
	fx.finished = append(fx.finished, o.finished...)
}

// emit records fx: its spans (made now, with the start times and IDs the
// run implies) and its metrics.
func (p *Planner) emit(ctx context.Context, fx effects) {
	for _, s := range fx.spans {
		telemetry.Record(ctx, p.tracer, s)
	}
	for _, s := range fx.steps {
		p.metrics.stepDuration.WithLabelValues(s.typ, s.phase).Observe(s.seconds)
	}
	if fx.started > 0 {
		p.metrics.releasesStarted.Add(float64(fx.started))
	}
	for _, r := range fx.finished {
		p.metrics.releasesFinished.WithLabelValues(r).Inc()
	}
}

// traceTransitions is what transitions imply for the trace: the span of
// every step that ended and, when the run ended, the release's. It marks
// rec's trace done then, so the release's span is made once.
func (p *Planner) traceTransitions(rec *Record, transitions []workflow.Transition) effects {
	var fx effects
	for _, t := range transitions {
		if t.Type == events.TypeStepSucceeded || t.Type == events.TypeStepFailed {
			fx.add(p.endStep(rec, t.Index, ""))
		}
	}
	if rec.Run.Finished() && !rec.TraceDone {
		rec.TraceDone = true
		// A run that ended before its trace was kept (a record older than
		// tracing) ends here without spans.
		if len(transitions) > 0 {
			fx.add(p.endRelease(rec, string(rec.Run.Phase)))
		}
	}
	return fx
}

// endStep is step i's span and duration; cut, when not empty, says why a
// step still open ends (superseded, restarted, deleted).
func (p *Planner) endStep(rec *Record, i int, cut string) effects {
	s := rec.Run.Steps[i]
	phase := string(s.Phase)
	end := s.LastExecuteTime
	if cut != "" {
		phase, end = cut, time.Time{}
	}
	span := telemetry.Span{
		Name: "step " + s.Name, Parent: rec.rootContext(), ID: rec.stepContext(i).SpanID(),
		Start: s.FirstExecuteTime, End: end,
		Attrs: append(releaseAttrs(rec.Run.AppRef), telemetry.AttrStep.String(s.Name), telemetry.AttrStepType.String(s.Type),
			telemetry.AttrPhase.String(phase)),
	}
	if s.Clusters != nil {
		span.Attrs = append(span.Attrs, telemetry.AttrClusters.StringSlice(s.Clusters))
	}
	if n := len(s.Approvals); n > 0 {
		span.Attrs = append(span.Attrs, telemetry.AttrApprover.String(s.Approvals[n-1].Approver), telemetry.AttrChannel.String(s.Approvals[n-1].Via))
	}
	switch {
	case cut != "":
		span.Err = cut + " before the step ended"
	case s.Phase == workflow.StepFailed:
		span.Err = s.Reason + ": " + s.Message
	}
	fx := effects{spans: []telemetry.Span{span}}
	if !span.Start.IsZero() && !span.End.IsZero() {
		fx.steps = []stepEnded{{typ: s.Type, phase: phase, seconds: span.End.Sub(span.Start).Seconds()}}
	}
	return fx
}

// endRelease is the root span of rec's run, ended with result, and the
// spans of the steps still open, which end with it (their spans already
// have children).
func (p *Planner) endRelease(rec *Record, result string) effects {
	var fx effects
	run := rec.Run
	if result != string(run.Phase) {
		for i, s := range run.Steps {
			if !s.FirstExecuteTime.IsZero() && (s.Phase == workflow.StepRunning || s.Phase == workflow.StepSuspending) {
				fx.add(p.endStep(rec, i, result))
			}
		}
	}
	span := telemetry.Span{
		Name: "release", TraceID: rec.rootContext().TraceID(), ID: rec.rootContext().SpanID(),
		Start: run.Start, End: run.End,
		Attrs: append(releaseAttrs(run.AppRef), telemetry.AttrPhase.String(result), telemetry.AttrAttempt.Int(run.Attempt)),
	}
	if run.End.IsZero() || !run.Finished() {
		span.End = time.Time{} // ended now, by result
	}
	if result != string(workflow.RunSucceeded) {
		span.Err = result + ": " + run.Message
	}
	if !rec.TraceUnsampled {
		fx.spans = append(fx.spans, span)
	}
	fx.finished = append(fx.finished, result)
	return fx
}

// stepTraceParent is the traceparent every event of step i carries.
func stepTraceParent(rec *Record, i int) string {
	return telemetry.TraceParent(rec.stepContext(i))
}

// metrics are the planner's Prometheus metrics.
type metrics struct {
	releasesStarted  prometheus.Counter
	releasesFinished *prometheus.CounterVec
	stepDuration     *prometheus.HistogramVec
	reports          *prometheus.CounterVec
	consumers        *bus.ConsumerMetrics
	deadLetters      *bus.DeadLetters
}

func newMetrics() *metrics {
	return &metrics{
		releasesStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flotilla_releases_started_total", Help: "Runs of a release's workflow started (a release cut by publishVersion or generation, a rollback, a restart).",
		}),
		releasesFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_releases_finished_total", Help: "Runs of a release's workflow that ended, by result (succeeded, failed, terminated; superseded by a newer release, restarted, deleted).",
		}, []string{"result"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flotilla_step_duration_seconds", Help: "Workflow step duration from start to end (approval waits included), by step type and phase.",
			Buckets: []float64{0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600},
		}, []string{"type", "phase"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_planner_reports_total", Help: "Reports the planner handled, by kind (dispatch, status, decision, drift).",
		}, []string{"kind"}),
		consumers: bus.NewConsumerMetrics(),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.releasesStarted, m.releasesFinished, m.stepDuration, m.reports, m.consumers, m.deadLetters.Collector()}
}

// reportSpan starts the span of handling report e, under the span that sent it.
func (p *Planner) reportSpan(ctx context.Context, e *events.Event, kind string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = telemetry.Extract(ctx, e.TraceParent, e.TraceState)
	return p.tracer.Start(ctx, "handle "+kind, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(append(attrs, telemetry.AttrEventType.String(e.Type), telemetry.AttrEventID.String(e.ID))...))
}
