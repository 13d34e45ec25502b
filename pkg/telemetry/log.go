// Package telemetry owns how Flotilla's services report on themselves:
// structured logs (log/slog) carrying the trace and span of the work they
// describe, OpenTelemetry traces exported over OTLP (one trace per release,
// its spans made by whichever service did the work), and the Prometheus
// /metrics endpoint.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
)

// LogOptions say how a service logs.
type LogOptions struct {
	Level  string
	Format string
}

// BindFlags binds --log-level and --log-format.
func (o *LogOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.Format, "log-format", "json", "json or text")
}

// Logger returns the service's logger, tagged with its name.
func (o *LogOptions) Logger(w io.Writer, service string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.Level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", o.Level, err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(o.Format) {
	case "json":
		h = slog.NewJSONHandler(w, hopts)
	case "text":
		h = slog.NewTextHandler(w, hopts)
	default:
		return nil, fmt.Errorf("--log-format %q: want json or text", o.Format)
	}
	return slog.New(traceHandler{h}).With("service", service), nil
}

// traceHandler adds trace_id and span_id to records logged with a context
// inside a span, so a log line leads to its release's trace.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
