package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func recorder(t *testing.T) (*tracetest.SpanRecorder, trace.Tracer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithIDGenerator(idGenerator{}))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return rec, tp.Tracer("test")
}

func TestDerivedIDs(t *testing.T) {
	a, b := ReleaseTraceID("uid-1", 1), ReleaseTraceID("uid-1", 2)
	if !a.IsValid() || a == b {
		t.Fatalf("release trace IDs: %s, %s", a, b)
	}
	if a != ReleaseTraceID("uid-1", 1) {
		t.Error("release trace ID is not stable")
	}
	if ReleaseSpanID(a) == ReleaseSpanID(b) || !ReleaseSpanID(a).IsValid() {
		t.Error("release span IDs collide or are invalid")
	}
	x1, x2 := SpanIDFor("x"), SpanIDFor("x")
	if x1 != x2 || x1 == SpanIDFor("y") {
		t.Error("SpanIDFor is not a function of its key")
	}
}

// A span made after the fact keeps the IDs its children were given and
// the times it really spanned.
func TestRecordLateSpan(t *testing.T) {
	rec, tracer := recorder(t)
	tid := ReleaseTraceID("uid", 3)
	root, step := ReleaseSpanID(tid), SpanIDFor("step")
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	rootSC := Record(context.Background(), tracer, Span{Name: "release", TraceID: tid, ID: root, Start: start, End: start.Add(72 * time.Hour)})
	if rootSC.TraceID() != tid || rootSC.SpanID() != root {
		t.Fatalf("root span %s/%s, want %s/%s", rootSC.TraceID(), rootSC.SpanID(), tid, root)
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: root, TraceFlags: trace.FlagsSampled, Remote: true})
	stepSC := Record(context.Background(), tracer, Span{Name: "step", Parent: parent, ID: step, Start: start.Add(time.Hour), End: start.Add(2 * time.Hour), Err: "Timeout: too slow"})
	if stepSC.TraceID() != tid || stepSC.SpanID() != step {
		t.Fatalf("step span %s/%s", stepSC.TraceID(), stepSC.SpanID())
	}
	// Without a fixed ID a child gets a random one in its parent's trace.
	other := Record(context.Background(), tracer, Span{Name: "other", Parent: parent, Start: start, End: start})
	if other.TraceID() != tid || other.SpanID() == step || other.SpanID() == root {
		t.Errorf("unfixed child %s/%s", other.TraceID(), other.SpanID())
	}
	ended := rec.Ended()
	if len(ended) != 3 {
		t.Fatalf("%d spans ended, want 3", len(ended))
	}
	r, s := ended[0], ended[1]
	if r.Parent().IsValid() || !r.StartTime().Equal(start) || !r.EndTime().Equal(start.Add(72*time.Hour)) {
		t.Errorf("root: parent %v, %v..%v", r.Parent(), r.StartTime(), r.EndTime())
	}
	if s.Parent().SpanID() != root || s.Status().Description != "Timeout: too slow" {
		t.Errorf("step: parent %s, status %+v", s.Parent().SpanID(), s.Status())
	}
}

func TestPropagation(t *testing.T) {
	tests := []struct {
		name, traceparent string
		valid             bool
	}{
		{"sampled", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", true},
		{"not sampled", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", true},
		{"empty", "", false},
		{"garbage", "not-a-traceparent", false},
		{"zero trace", "00-00000000000000000000000000000000-b7ad6b7169203331-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := SpanContextOf(tt.traceparent, "")
			if sc.IsValid() != tt.valid {
				t.Fatalf("valid = %v, want %v", sc.IsValid(), tt.valid)
			}
			if !tt.valid {
				return
			}
			tp, _ := Inject(Extract(context.Background(), tt.traceparent, ""))
			if tp != tt.traceparent || TraceParent(sc) != tt.traceparent {
				t.Errorf("round trip: %q / %q, want %q", tp, TraceParent(sc), tt.traceparent)
			}
		})
	}
}

func TestLogsCarryTraceAndSpan(t *testing.T) {
	var buf bytes.Buffer
	log, err := (&LogOptions{Level: "info", Format: "json"}).Logger(&buf, "planner")
	if err != nil {
		t.Fatal(err)
	}
	_, tracer := recorder(t)
	ctx, span := tracer.Start(context.Background(), "work")
	log.With("app", "demo/demo").InfoContext(ctx, "in a span")
	span.End()
	log.Info("outside")
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	var in, out map[string]any
	_ = json.Unmarshal(lines[0], &in)
	_ = json.Unmarshal(lines[1], &out)
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] != span.SpanContext().SpanID().String() || in["app"] != "demo/demo" || in["service"] != "planner" {
		t.Errorf("line in a span: %s", lines[0])
	}
	if _, ok := out["trace_id"]; ok {
		t.Errorf("line outside any span has a trace_id: %s", lines[1])
	}
}

func TestLogOptions(t *testing.T) {
	for _, o := range []LogOptions{{Level: "loud", Format: "json"}, {Level: "info", Format: "xml"}} {
		if _, err := o.Logger(&bytes.Buffer{}, "x"); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestExporterFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{"unset: no export", map[string]string{}, false, false},
		{"endpoint: http", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, true, false},
		{"traces endpoint, grpc", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false},
		{"exporter none wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}, false, false},
		{"unknown protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_EXPORTER"} {
				t.Setenv(k, tt.env[k])
			}
			tr, err := NewTracing(context.Background(), "flotilla-test")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer tr.Shutdown(context.Background())
			if tr.Exporting != tt.want {
				t.Errorf("exporting = %v, want %v", tr.Exporting, tt.want)
			}
		})
	}
}
