// Package telemetry owns how Flotilla's services report on themselves:
// structured logs (log/slog) now; traces and metrics join it.
package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
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
	return slog.New(h).With("service", service), nil
}
