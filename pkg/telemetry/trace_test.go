package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

// otlpRequest is what an OTLP receiver was sent.
type otlpRequest struct{ proto, path, contentType string }

// otlpReceiver answers OTLP/HTTP and OTLP/gRPC (HTTP/2 without TLS, as
// gRPC's insecure transport speaks it) exports with success, and records
// how each came.
func otlpReceiver(t *testing.T) (string, <-chan otlpRequest) {
	t.Helper()
	got := make(chan otlpRequest, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- otlpRequest{proto: r.Proto, path: r.URL.Path, contentType: r.Header.Get("Content-Type")}
		if r.Header.Get("Content-Type") == "application/grpc" {
			// An empty ExportTraceServiceResponse, then status OK in the trailers.
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write([]byte{0, 0, 0, 0, 0})
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL, got
}

// The OTEL_* variables decide whether spans leave the process and how: a
// span sent reaches the receiver over OTLP/HTTP (protobuf on /v1/traces)
// or OTLP/gRPC (the trace service's Export over HTTP/2), as asked.
func TestExporterFromEnv(t *testing.T) {
	endpoint, received := otlpReceiver(t)
	httpProto := otlpRequest{proto: "HTTP/1.1", path: "/v1/traces", contentType: "application/x-protobuf"}
	grpcProto := otlpRequest{proto: "HTTP/2.0", path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export", contentType: "application/grpc"}
	tests := []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
		// sent is how the span must arrive (when want).
		sent otlpRequest
	}{
		{"unset: no export", map[string]string{}, false, false, otlpRequest{}},
		{"endpoint: http", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, true, false, httpProto},
		{"endpoint, http/protobuf", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, true, false, httpProto},
		{"traces endpoint, grpc", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false, grpcProto},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, true, false, grpcProto},
		{"exporter none wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "none"}, false, false, otlpRequest{}},
		{"unknown protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, false, true, otlpRequest{}},
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
			if tr.Exporting != tt.want {
				t.Errorf("exporting = %v, want %v", tr.Exporting, tt.want)
			}
			_, span := tr.Tracer().Start(context.Background(), "work")
			span.End()
			// Shutdown sends what the batcher holds.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
			select {
			case got := <-received:
				if !tt.want {
					t.Fatalf("a span went out (%+v) with no export configured", got)
				}
				if got != tt.sent {
					t.Errorf("the span arrived as %+v, want %+v", got, tt.sent)
				}
			default:
				// Shutdown returned: whatever was exported has arrived.
				if tt.want {
					t.Error("no span reached the receiver")
				}
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	long := strings.Repeat("a", 600)
	// "é" is two bytes: the 512-byte cut falls inside the one at 511.
	straddling := strings.Repeat("a", 511) + strings.Repeat("é", 10)
	// "€" is three bytes, at 510..512: the cut falls after its second byte.
	euro := strings.Repeat("a", 510) + "€" + strings.Repeat("b", 10)
	tests := []struct {
		name, in, want string
	}{
		{"short", "apply failed", "apply failed"},
		{"one line", "apply failed:\ndenied\n", "apply failed: denied "},
		{"exactly the limit", long[:512], long[:512]},
		{"cut", long, long[:512] + "…"},
		{"cut before a two-byte character", straddling, straddling[:511] + "…"},
		{"cut before a three-byte character", euro, euro[:510] + "…"},
		{"a character ending at the limit stays", strings.Repeat("a", 510) + "é" + "zz", strings.Repeat("a", 510) + "é" + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Sanitize(tt.in)
			if got != tt.want {
				t.Errorf("Sanitize() = %q (%d bytes), want %q (%d bytes)", got, len(got), tt.want, len(tt.want))
			}
			if !utf8.ValidString(got) {
				t.Errorf("Sanitize() is not valid UTF-8: % x", got[max(0, len(got)-8):])
			}
		})
	}
}
