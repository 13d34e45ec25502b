// Package eventually owns how Flotilla's tests wait for something to
// happen: a condition on an observable end point (an event, a status, a
// counter) polled until it holds or a deadline passes, failing the test with
// what was awaited and the last thing observed. Tests never sleep and then
// check: they wait for the end point, with a deadline generous enough for a
// loaded two-core machine.
package eventually

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 50 * time.Millisecond

// True polls cond until it returns true, and fails the test (t.Fatalf)
// when timeout passes first, naming what and cond's last error. cond may
// return an error that is only worth reporting (not fatal): polling goes on.
func True(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Wait(ctx, cond); err != nil {
		t.Fatalf("waited %v for %s: %v", timeout, what, err)
	}
}

// Value polls get until ok accepts what it returned, and returns that; it
// fails the test when timeout passes first, showing the last value.
func Value[T any](t testing.TB, timeout time.Duration, what string, get func() (T, error), ok func(T) bool) T {
	t.Helper()
	var last T
	True(t, timeout, what, func() (bool, error) {
		v, err := get()
		if err != nil {
			return false, err
		}
		last = v
		if ok(v) {
			return true, nil
		}
		return false, fmt.Errorf("last seen: %+v", v)
	})
	return last
}

// Wait polls cond until it returns true or ctx ends; the error then says
// why, with cond's last error.
func Wait(ctx context.Context, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-time.After(Interval):
		}
	}
}
