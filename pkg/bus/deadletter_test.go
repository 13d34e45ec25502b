package bus

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
)

// A message no retry helps is handed over at most MaxDeliver times; the
// server then tells, and the service counts and logs it as a dead letter.
func TestDeadLettersAreCounted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t)
	if err := Setup(ctx, js, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	dl := NewDeadLetters(slog.New(slog.DiscardHandler))
	reg := prometheus.NewRegistry()
	reg.MustRegister(dl.Collector())
	sub, err := dl.Watch(js.Conn(), StreamSteps)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	cons, err := js.CreateOrUpdateConsumer(ctx, StreamSteps, jetstream.ConsumerConfig{
		Durable: "doomed", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	tries := make(chan uint64, 10)
	cc, err := Consume(ctx, cons, slog.New(slog.DiscardHandler), func(_ context.Context, e *events.Event) error {
		tries <- e.Deliveries
		return Retry(10*time.Millisecond, errors.New("never"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	if _, err := Publish(ctx, js, StepSubject("demo", "a"), deleted("d1", "a")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "one dead letter counted", func() (bool, error) {
		mfs, err := reg.Gather()
		if err != nil {
			return false, err
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if mf.GetName() == "flotilla_dead_letters_total" && m.GetCounter().GetValue() == 1 {
					return true, nil
				}
			}
		}
		return false, nil
	})
	close(tries)
	var seen []uint64
	for n := range tries {
		seen = append(seen, n)
	}
	if len(seen) != 3 || seen[0] != 1 || seen[2] != 3 {
		t.Errorf("deliveries %v, want 1, 2, 3", seen)
	}
}
