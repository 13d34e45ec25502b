package eventually

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	err := Wait(context.Background(), func() (bool, error) { return n.Add(1) == 3, nil })
	if err != nil || n.Load() != 3 {
		t.Fatalf("Wait() = %v after %d polls, want nil after 3", err, n.Load())
	}
}

func TestWaitReportsTheLastErrorAtTheDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	err := Wait(ctx, func() (bool, error) { return false, errors.New("still 0/1") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still 0/1") {
		t.Fatalf("Wait() = %v, want the deadline with the last error", err)
	}
}

func TestValueReturnsTheAcceptedValue(t *testing.T) {
	var n atomic.Int32
	got := Value(t, time.Second, "three", func() (int32, error) { return n.Add(1), nil }, func(v int32) bool { return v >= 3 })
	if got != 3 {
		t.Fatalf("Value() = %d, want 3", got)
	}
}

// fatalT records a failure instead of ending the test.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}
func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = format
	for _, a := range args {
		if s, ok := a.(string); ok {
			f.msg += " " + s
		}
	}
	panic(f)
}

func TestTrueFailsTheTestNamingWhatWasAwaited(t *testing.T) {
	ft := &fatalT{TB: t}
	func() {
		defer func() {
			if r := recover(); r != ft {
				t.Fatalf("True did not fail the test: %v", r)
			}
		}()
		True(ft, 100*time.Millisecond, "the Deployment to be 1/1", func() (bool, error) { return false, nil })
	}()
	if !strings.Contains(ft.msg, "the Deployment to be 1/1") {
		t.Errorf("failure %q does not say what was awaited", ft.msg)
	}
}
