package gate_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/eventually"
)

// logBook is a slog.Handler keeping every line the gate logs, so tests
// can wait for one.
type logBook struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	msg   string
	attrs map[string]string
}

func (l *logBook) Enabled(context.Context, slog.Level) bool { return true }
func (l *logBook) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logBook) WithGroup(string) slog.Handler            { return l }
func (l *logBook) Handle(_ context.Context, r slog.Record) error {
	line := logLine{msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		line.attrs[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

// logged waits for a line msg with attribute key=value.
func (l *logBook) logged(t *testing.T, msg, key, value string) {
	t.Helper()
	eventually.True(t, patience, fmt.Sprintf("the gate to log %q with %s=%s", msg, key, value), func() (bool, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return slices.ContainsFunc(l.lines, func(line logLine) bool { return line.msg == msg && line.attrs[key] == value }), nil
	})
}
