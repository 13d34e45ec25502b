package testbed

import (
	"context"
	"testing"
	"time"
)

// StartT starts a test bed for one test (skipped under -short) and stops it
// when the test ends.
func StartT(t testing.TB, opts Options) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the test bed's API servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return env
}
