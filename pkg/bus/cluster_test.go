package bus_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

func clusterJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.ConnectCluster(t, natstest.NewCluster(t, 3))
	return js
}

// Every service sets its streams up again on every start, with its own
// replica count: an operator's three replicas (and raised limits) stay.
func TestSetupNeverLowersReplicasOrLimits(t *testing.T) {
	js := clusterJS(t)
	ctx := t.Context()
	if err := bus.Setup(ctx, js, bus.SetupOptions{Replicas: 3, Memory: true}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, bus.StreamSteps)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	raised := cfg.MaxBytes * 4
	cfg.MaxBytes = raised
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// As a service started with the default (one replica) does.
	if err := bus.Setup(ctx, js, bus.SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	names := js.StreamNames(ctx)
	n := 0
	for name := range names.Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		n++
		if got := st.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("stream %s: %d replicas after a service set it up again, want 3", name, got)
		}
	}
	if n < 5 {
		t.Fatalf("only %d streams", n)
	}
	st, err = js.Stream(ctx, bus.StreamSteps)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxBytes; got != raised {
		t.Errorf("steps stream's MaxBytes %d after set up again, want the raised %d", got, raised)
	}
}

// On a replicated stream a lost compare-and-set comes back with a code of
// its own while the winner's write is being agreed on: every loser must
// read as a lost race (to read again), never as a failure.
func TestCompareAndSetRacesOnAReplicatedBucket(t *testing.T) {
	js := clusterJS(t)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "race", Replicas: 3, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	codes := map[jetstream.ErrorCode]int{}
	for round := range 20 {
		rev, err := kv.Put(ctx, "k", []byte("start"))
		if err != nil {
			t.Fatal(err)
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			won  int
			errs []error
		)
		for i := range 8 {
			wg.Go(func() {
				var err error
				if i%2 == 0 {
					_, err = kv.Update(ctx, "k", []byte{byte(i)}, rev)
				} else {
					_, err = js.Publish(ctx, "$KV.race.k", []byte{byte(i)}, jetstream.WithExpectLastSequencePerSubject(rev))
				}
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					won++
				} else {
					errs = append(errs, err)
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("round %d: %d writers won, want 1", round, won)
		}
		for _, err := range errs {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) {
				codes[apiErr.ErrorCode]++
			}
			if !bus.IsWrongLastSequence(err) {
				t.Errorf("round %d: a lost race read as a failure: %v", round, err)
			}
		}
	}
	t.Logf("lost races by error code: %v", codes)
}

func TestIsWrongLastSequence(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"single replica", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, true},
		{"replicated", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}, true},
		{"bucket create", jetstream.ErrKeyExists, true},
		{"bucket update", jetstream.ErrKeyRevisionMismatch, true},
		{"other API error", &jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled}, false},
		{"timeout", nats.ErrTimeout, false},
		{"none", nil, false},
	} {
		if got := bus.IsWrongLastSequence(tc.err); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}
