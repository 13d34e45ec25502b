package gate

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// waitContext is the span context of the step's wait for a decision: a
// child of the step's span with an ID fixed by the run and step, so the
// decision event (sent before the span is made) already names it.
func (w *waiting) waitContext() trace.SpanContext {
	parent := trace.SpanContextFromContext(telemetry.Extract(context.Background(), w.TraceParent, w.TraceState))
	if !parent.IsValid() {
		return trace.SpanContext{}
	}
	sid := telemetry.SpanIDFor(parent.TraceID().String() + "/approval/" + events.RunID(w.AppRef) + "/" + w.Step)
	return parent.WithSpanID(sid).WithRemote(true)
}

// traceWait records the wait's span, from the request to now, with who
// decided and how (decision "" with why when the wait ended undecided);
// the deciding request's own trace (a bot's), if any, becomes a link.
func (g *Gate) traceWait(ctx context.Context, w *waiting, decision, undecided string) {
	now := g.now()
	if !w.Requested.IsZero() && decision != "" {
		g.wait.WithLabelValues(decision).Observe(now.Sub(w.Requested).Seconds())
	}
	wc := w.waitContext()
	if !wc.IsValid() {
		return
	}
	var approvers []string
	last := events.Approval{}
	for _, a := range w.Approvals {
		approvers = append(approvers, a.Approver)
		last = a
	}
	span := telemetry.Span{
		Name: "wait for approval", Parent: telemetry.SpanContextOf(w.TraceParent, w.TraceState), ID: wc.SpanID(),
		Start: w.Requested, End: now,
		Attrs: []attribute.KeyValue{
			telemetry.AttrApplication.String(w.Application), telemetry.AttrNamespace.String(w.Namespace),
			telemetry.AttrRelease.String(w.Release), telemetry.AttrStep.String(w.Step),
			telemetry.AttrDecision.String(decision), telemetry.AttrApprovers.StringSlice(approvers),
			telemetry.AttrMinApprovals.Int(w.MinApprovals),
		},
	}
	switch {
	case decision == "":
		span.Err = undecided
	case decision == events.DecisionReject:
		span.Err = "rejected by " + last.Approver + ": " + last.Reason
	}
	if decision != "" {
		span.Attrs = append(span.Attrs, telemetry.AttrApprover.String(last.Approver), telemetry.AttrChannel.String(last.Via))
	}
	if caller := telemetry.SpanContextOf(w.Link, ""); caller.IsValid() && caller.TraceID() != wc.TraceID() {
		span.Links = append(span.Links, trace.Link{SpanContext: caller, Attributes: []attribute.KeyValue{telemetry.AttrLink.String("decision request")}})
	}
	telemetry.Record(ctx, g.tracer, span)
}
