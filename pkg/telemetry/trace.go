package telemetry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Attribute keys Flotilla puts on its spans (and resources).
const (
	AttrCluster        = attribute.Key("flotilla.cluster")
	AttrApplication    = attribute.Key("flotilla.application")
	AttrNamespace      = attribute.Key("k8s.namespace.name")
	AttrRelease        = attribute.Key("flotilla.release")
	AttrRevision       = attribute.Key("flotilla.revision")
	AttrPublishVersion = attribute.Key("flotilla.publish_version")
	AttrStep           = attribute.Key("flotilla.step")
	AttrStepType       = attribute.Key("flotilla.step.type")
	AttrPhase          = attribute.Key("flotilla.phase")
	AttrApprover       = attribute.Key("flotilla.approver")
	AttrApprovers      = attribute.Key("flotilla.approvers")
	AttrChannel        = attribute.Key("flotilla.approval.channel")
	AttrDecision       = attribute.Key("flotilla.approval.decision")
	AttrClusters       = attribute.Key("flotilla.clusters")
	AttrObject         = attribute.Key("flotilla.object")
	AttrEventType      = attribute.Key("cloudevents.event_type")
	AttrEventID        = attribute.Key("cloudevents.event_id")
	AttrAttempt        = attribute.Key("flotilla.attempt")
	AttrHealthy        = attribute.Key("flotilla.healthy")
	AttrStale          = attribute.Key("flotilla.stale")
	AttrWorkKind       = attribute.Key("flotilla.work.kind")
	AttrDriftChange    = attribute.Key("flotilla.drift.change")
	AttrMinApprovals   = attribute.Key("flotilla.approval.min")
	AttrObjects        = attribute.Key("flotilla.objects")
	AttrRetry          = attribute.Key("flotilla.retry")
	AttrDuplicate      = attribute.Key("flotilla.duplicate")
	AttrLink           = attribute.Key("flotilla.link")
)

// Tracing is a service's tracer provider: spans go to the OTLP endpoint the
// standard OTEL_EXPORTER_OTLP_* variables name, or nowhere when none is set
// (spans are still made, so trace IDs reach logs and events).
type Tracing struct {
	provider *sdktrace.TracerProvider
	// Exporting says whether spans leave the process.
	Exporting bool
}

// NewTracing builds the tracer provider of service (flotilla-planner, ...);
// attrs join the resource (the agent's flotilla.cluster). Sampling is
// parent-based (OTEL_TRACES_SAMPLER may change it), so every service keeps
// or drops a release's spans as the planner's root decided.
func NewTracing(ctx context.Context, service string, attrs ...attribute.KeyValue) (*Tracing, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(append([]attribute.KeyValue{semconv.ServiceName(service)}, attrs...)...),
		resource.WithFromEnv(), resource.WithHost(), resource.WithProcessPID())
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithIDGenerator(idGenerator{})}
	exp, err := exporterFromEnv(ctx)
	if err != nil {
		return nil, err
	}
	if exp != nil {
		opts = append(opts, sdktrace.WithBatcher(exp)) // OTEL_BSP_* tune it
	}
	return &Tracing{provider: sdktrace.NewTracerProvider(opts...), Exporting: exp != nil}, nil
}

// exporterFromEnv is the OTLP exporter the environment asks for, or nil.
func exporterFromEnv(ctx context.Context) (sdktrace.SpanExporter, error) {
	if os.Getenv("OTEL_TRACES_EXPORTER") == "none" ||
		os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want http/protobuf or grpc", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	return exp, nil
}

// Tracer is the provider's tracer for Flotilla's code.
func (t *Tracing) Tracer() trace.Tracer {
	if t == nil {
		return NoopTracer()
	}
	return t.provider.Tracer("github.com/flotilla-dev/flotilla")
}

// Shutdown sends the spans still queued.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// NoopTracer makes spans that go nowhere (for packages used without tracing).
func NoopTracer() trace.Tracer { return noop.NewTracerProvider().Tracer("") }

var propagator = propagation.TraceContext{}

// Extract returns ctx carrying the remote span context of a W3C traceparent
// (and tracestate), as a CloudEvent's distributed-tracing extension holds it.
func Extract(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent, "tracestate": tracestate})
}

// Inject returns the W3C traceparent and tracestate of ctx's span ("" when none).
func Inject(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// TraceParent formats a span context as a W3C traceparent.
func TraceParent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// TraceIDFor is a trace ID derived from key: every replica and restart
// computes the same one for the same release.
func TraceIDFor(key string) trace.TraceID {
	sum := sha256.Sum256([]byte("trace/" + key))
	var id trace.TraceID
	copy(id[:], sum[:16])
	if !id.IsValid() {
		id[15] = 1
	}
	return id
}

// SpanIDFor is a span ID derived from key, so a span made late (a step
// that took days, made when it ends) has the ID its children already name.
func SpanIDFor(key string) trace.SpanID {
	sum := sha256.Sum256([]byte("span/" + key))
	var id trace.SpanID
	copy(id[:], sum[:8])
	if !id.IsValid() {
		id[7] = 1
	}
	return id
}

// RemoteParent returns ctx whose parent is the span (trace, span), sampled
// or not: for spans whose parent another process made, or will make.
func RemoteParent(ctx context.Context, tid trace.TraceID, sid trace.SpanID, sampled bool) context.Context {
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true,
	}))
}

type forcedIDsKey struct{}

type forcedIDs struct {
	trace trace.TraceID
	span  trace.SpanID
}

// WithIDs makes a span started from ctx take these IDs (a root span takes
// tid; a child keeps its parent's trace and takes only sid). Every span
// started from ctx or a context derived from it would: start exactly one.
func WithIDs(ctx context.Context, tid trace.TraceID, sid trace.SpanID) context.Context {
	return context.WithValue(ctx, forcedIDsKey{}, forcedIDs{trace: tid, span: sid})
}

// IDGenerator is the ID generator every Flotilla tracer provider needs (a
// provider built without it ignores WithIDs, and late spans lose their
// children): random IDs, except where WithIDs asked for fixed ones.
func IDGenerator() sdktrace.IDGenerator { return idGenerator{} }

type idGenerator struct{}

func (idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if f, ok := ctx.Value(forcedIDsKey{}).(forcedIDs); ok && f.trace.IsValid() && f.span.IsValid() {
		return f.trace, f.span
	}
	var tid trace.TraceID
	_, _ = rand.Read(tid[:])
	return tid, randomSpanID()
}

func (idGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if f, ok := ctx.Value(forcedIDsKey{}).(forcedIDs); ok && f.span.IsValid() {
		return f.span
	}
	return randomSpanID()
}

func randomSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		_, _ = rand.Read(sid[:])
	}
	return sid
}

// Span is a finished piece of work recorded after the fact: its start may
// lie before this process started (a step that began days ago). A zero
// Start or End is now.
type Span struct {
	Name   string
	Kind   trace.SpanKind
	Parent trace.SpanContext // zero: a root span
	// ID fixes the span's ID (and, for a root, TraceID the trace's).
	TraceID    trace.TraceID
	ID         trace.SpanID
	Start, End time.Time
	Attrs      []attribute.KeyValue
	// Err marks the span failed with this description.
	Err   string
	Links []trace.Link
}

// Record makes s in tracer and ends it at once; it returns its context.
func Record(ctx context.Context, tracer trace.Tracer, s Span) trace.SpanContext {
	ctx = trace.ContextWithSpanContext(ctx, s.Parent)
	if s.ID.IsValid() {
		ctx = WithIDs(ctx, s.TraceID, s.ID)
	}
	now := time.Now()
	if s.Start.IsZero() {
		s.Start = now
	}
	if s.End.IsZero() {
		s.End = now
	}
	if s.End.Before(s.Start) {
		s.End = s.Start
	}
	opts := []trace.SpanStartOption{trace.WithTimestamp(s.Start), trace.WithSpanKind(s.Kind), trace.WithAttributes(s.Attrs...), trace.WithLinks(s.Links...)}
	if !s.Parent.IsValid() {
		opts = append(opts, trace.WithNewRoot())
	}
	_, span := tracer.Start(ctx, s.Name, opts...)
	if s.Err != "" {
		span.SetStatus(codes.Error, Sanitize(s.Err))
	}
	span.End(trace.WithTimestamp(s.End))
	return span.SpanContext()
}

// SetError marks span failed with err (shortened, single-line).
func SetError(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, Sanitize(err.Error()))
	}
}

// maxValue is the most bytes Sanitize keeps of a value.
const maxValue = 512

// Sanitize keeps attribute values short and single-line. A value cut short
// ends with "…", and is cut between characters, so it stays valid UTF-8
// (exporters and Jaeger would otherwise mangle or refuse it).
func Sanitize(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > maxValue {
		cut := maxValue
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// ReleaseTraceID is the trace of one release of an application (by its UID
// and revision): the planner, every replica and restart, and
// `kubectl flotilla trace` compute the same one.
func ReleaseTraceID(uid string, revision int64) trace.TraceID {
	return TraceIDFor(fmt.Sprintf("release/%s/%d", uid, revision))
}

// ReleaseSpanID is the ID of a release's root span.
func ReleaseSpanID(tid trace.TraceID) trace.SpanID {
	return SpanIDFor(tid.String() + "/release")
}

// SpanContextOf parses a W3C traceparent (and tracestate); invalid when it is not one.
func SpanContextOf(traceparent, tracestate string) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), traceparent, tracestate))
}
