package jaeger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The real Jaeger (`make jaeger`): a span sent with the OpenTelemetry SDK's
// OTLP/HTTP exporter comes back through the query API, parent, tags,
// status and resource attributes included.
func TestRealJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Jaeger")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	began := time.Now()
	j, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Stop()
	t.Logf("Jaeger ready in %v: query %s, OTLP %s and %s", time.Since(began).Round(time.Millisecond), j.QueryURL, j.OTLPHTTPEndpoint, j.OTLPGRPCEndpoint)

	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(j.OTLPHTTPEndpoint+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(resource.NewWithAttributes("",
		attribute.String("service.name", "flotilla-cluster-agent"), attribute.String("flotilla.cluster", "managedcluster-ctest01"))))
	tracer := tp.Tracer("test")
	pctx, parent := tracer.Start(ctx, "apply release")
	_, child := tracer.Start(pctx, "apply Deployment")
	child.SetAttributes(attribute.String("flotilla.object", "apps/v1 Deployment demo/demo"), attribute.Int64("attempt", 2))
	child.SetStatus(codes.Error, "denied")
	child.End()
	parent.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	traceID := parent.SpanContext().TraceID().String()

	c := j.Client()
	var tr *Trace
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		tr, err = c.Trace(ctx, traceID)
		if err == nil && len(tr.Spans) == 2 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("Trace(%s): %v", traceID, err)
	}
	if tr.TraceID != traceID || len(tr.Spans) != 2 {
		t.Fatalf("trace %s has %d spans, want %s with 2", tr.TraceID, len(tr.Spans), traceID)
	}
	nodes := tr.Tree()
	work, apply := nodes[0].Span, nodes[1].Span
	if work.OperationName != "apply release" || apply.OperationName != "apply Deployment" || nodes[1].Depth != 1 || tr.Parent(apply) != work {
		t.Errorf("tree: %s (depth %d), %s (depth %d), want apply release > apply Deployment", work.OperationName, nodes[0].Depth, apply.OperationName, nodes[1].Depth)
	}
	if s := tr.Service(apply); s != "flotilla-cluster-agent" {
		t.Errorf("Service() = %q", s)
	}
	if v, ok := tr.Attr(apply, "flotilla.cluster"); !ok || v != "managedcluster-ctest01" {
		t.Errorf("flotilla.cluster = %q, %v (a resource attribute, under processes)", v, ok)
	}
	if v, _ := apply.Tag("flotilla.object"); v != "apps/v1 Deployment demo/demo" {
		t.Errorf("flotilla.object = %q", v)
	}
	if v, _ := apply.Tag("attempt"); v != "2" {
		t.Errorf("attempt = %q", v)
	}
	if failed, desc := apply.Failed(); !failed || desc != "denied" {
		t.Errorf("Failed() = %v, %q", failed, desc)
	}
	if want := apply.Duration(); want < 0 || want > time.Second {
		t.Errorf("Duration() = %v", want)
	}

	traces, err := c.Find(ctx, "flotilla-cluster-agent", time.Hour, 10)
	if err != nil || len(traces) != 1 || traces[0].TraceID != traceID {
		t.Errorf("Find() = %d traces, %v; want the one trace", len(traces), err)
	}
	services, err := c.Services(ctx)
	if err != nil || len(services) != 1 || services[0] != "flotilla-cluster-agent" {
		t.Errorf("Services() = %v, %v", services, err)
	}
	_, err = c.Trace(ctx, "0123456789abcdef0123456789abcdef")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Trace(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jaeger.log")); err != nil {
		t.Errorf("no log in Dir: %v", err)
	}
	j.Stop()
	if !j.Process().Exited() {
		t.Error("Jaeger still runs after Stop")
	}
}

func TestStartNamesMissingBinary(t *testing.T) {
	_, err := Start(context.Background(), Options{Bin: filepath.Join(t.TempDir(), "jaeger")})
	if err == nil || !strings.Contains(err.Error(), "make jaeger") {
		t.Fatalf("Start() error = %v, want it to say to run make jaeger", err)
	}
	t.Setenv("FLOTILLA_JAEGER_BIN", filepath.Join(t.TempDir(), "nope"))
	if _, err := ResolveBin(""); err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "make jaeger") {
		t.Errorf("ResolveBin() error = %v, want the path from FLOTILLA_JAEGER_BIN and make jaeger", err)
	}
}

// A Jaeger that dies at start fails Start with its name and the end of its
// log, and leaves nothing running.
func TestStartReportsAProcessThatDies(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "jaeger")
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := "#!/bin/sh\necho $$ > " + pidFile + "\necho \"cannot listen on 127.0.0.1:$JAEGER_QUERY_HTTP_PORT: disk on fire\" >&2\nexit 3\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err := Start(context.Background(), Options{Bin: bin, Dir: dir, StartTimeout: 10 * time.Second})
	if err == nil {
		t.Fatal("Start() of a dying Jaeger succeeded")
	}
	for _, want := range []string{"jaeger", "exit status 3", "disk on fire", filepath.Join(dir, "jaeger.log")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	assertGone(t, pidFile)
}

// assertGone checks that the process whose PID the fake Jaeger wrote to
// pidFile no longer exists (exited and reaped): Start left nothing running.
func assertGone(t *testing.T, pidFile string) {
	t.Helper()
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the fake Jaeger never ran: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("Jaeger's process %d still exists after Start failed (kill 0: %v)", pid, err)
	}
}

// A Jaeger that never answers fails Start after StartTimeout, and is stopped.
func TestStartTimesOut(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "jaeger")
	pidFile := filepath.Join(t.TempDir(), "pid")
	// exec keeps the PID: the one written is the one that sleeps.
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho $$ > "+pidFile+"\necho starting\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err := Start(context.Background(), Options{Bin: bin, StartTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not ready") || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("Start() error = %v, want not ready with the log", err)
	}
	// StartTimeout, not the 30 s default, bounded the wait.
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("Start took %v", d)
	}
	assertGone(t, pidFile)
}
