package gate_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// The wait for approval is a span of the step's trace; the bot's own
// trace, sent with its HTTP approval, becomes a link on it.
func TestBotTraceLink(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithIDGenerator(telemetry.IDGenerator()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := start(t, "traced", &gate.Config{Identities: []gate.Identity{{Name: "chat-bot", HMACSecret: "c", Delegate: true, Namespaces: []string{"*"}}}},
		gate.Options{Instruments: telemetry.Instruments{Tracer: tp.Tracer("test"), Metrics: prometheus.NewRegistry()}})

	const (
		step = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		bot  = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	)
	e := f.suspension("web", `{"auto":false,"policies":["p"]}`)
	e.TraceParent = step
	f.publishStep(e)
	f.requested("web")
	if code, _ := f.post("chat-bot", f.approval("web", "approve", "alice"), map[string]string{"traceparent": bot}); code != http.StatusAccepted {
		t.Fatalf("approval: %d", code)
	}
	span := eventually.Value(t, patience, "the wait's span", func() (sdktrace.ReadOnlySpan, error) {
		for _, s := range rec.Ended() {
			if s.Name() == "wait for approval" {
				return s, nil
			}
		}
		return nil, nil
	}, func(s sdktrace.ReadOnlySpan) bool { return s != nil })
	stepSC, botSC := telemetry.SpanContextOf(step, ""), telemetry.SpanContextOf(bot, "")
	if span.SpanContext().TraceID() != stepSC.TraceID() || span.Parent().SpanID() != stepSC.SpanID() {
		t.Errorf("the wait's span is in trace %s under %s, want the step's %s under %s", span.SpanContext().TraceID(), span.Parent().SpanID(), stepSC.TraceID(), stepSC.SpanID())
	}
	links := span.Links()
	if len(links) != 1 || links[0].SpanContext.TraceID() != botSC.TraceID() || links[0].SpanContext.SpanID() != botSC.SpanID() {
		t.Fatalf("the wait's span links %+v, want the bot's span %s", links, bot)
	}
	if d := f.decisions("web"); len(d) != 1 || telemetry.SpanContextOf(d[0].TraceParent, "").SpanID() != span.SpanContext().SpanID() {
		t.Errorf("the decision does not name the wait's span as its parent: %+v", d)
	}
}
