package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// A consumer watched twice (as after a reconnect) is one series, and its
// pending count is what waits for it.
func TestConsumerMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := natstest.New(t)
	_, js := s.JetStream(t)
	if err := bus.Setup(ctx, js, bus.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamSteps, jetstream.ConsumerConfig{Durable: "metrics-test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e := events.New("e"+string(rune('a'+i)), events.SourcePlanner, events.TypeApplicationDeleted, "ns/app",
			&events.ApplicationDeletedData{Namespace: "ns", Application: "app", UID: "u"})
		if _, err := bus.Publish(ctx, js, bus.StepSubject("ns", "app"), e); err != nil {
			t.Fatal(err)
		}
	}
	m := bus.NewConsumerMetrics()
	m.Watch(cons)
	again, _ := js.Consumer(ctx, bus.StreamSteps, "metrics-test")
	m.Watch(again)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	// The server counts pending messages a moment after they are stored; a
	// scrape on a loaded machine may miss NATS's answer (up 0): scrape again.
	got := eventually.Value(t, 30*time.Second, "3 pending and up", func() (map[string]float64, error) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			if len(mf.GetMetric()) != 1 {
				t.Fatalf("%s has %d series, want 1", mf.GetName(), len(mf.GetMetric()))
			}
			mt := mf.GetMetric()[0]
			got[mf.GetName()] = mt.GetGauge().GetValue()
			for _, l := range mt.GetLabel() {
				if l.GetName() == "consumer" && l.GetValue() != "metrics-test" {
					t.Errorf("consumer label %q", l.GetValue())
				}
			}
		}
		return got, nil
	}, func(got map[string]float64) bool {
		return got["flotilla_consumer_pending_messages"] == 3 && got["flotilla_consumer_info_up"] == 1
	})
	if got["flotilla_consumer_pending_messages"] != 3 || got["flotilla_consumer_info_up"] != 1 {
		t.Errorf("metrics %v, want 3 pending and up", got)
	}
	// NATS gone: the scrape ends (each consumer's question is bounded, so
	// a scrape never hangs; the bound here is only a loaded machine's) and
	// says so.
	s.Shutdown()
	// What the scrape reports wrong, sent once it ends.
	ended := make(chan []string, 1)
	go func() {
		mfs, _ := reg.Gather()
		var wrong []string
		for _, mf := range mfs {
			if mf.GetName() == "flotilla_consumer_info_up" && mf.GetMetric()[0].GetGauge().GetValue() != 0 {
				wrong = append(wrong, "consumer info up with NATS gone")
			}
			if mf.GetName() == "flotilla_consumer_pending_messages" {
				wrong = append(wrong, "a pending count reported with NATS gone")
			}
		}
		ended <- wrong
	}()
	select {
	case wrong := <-ended:
		for _, w := range wrong {
			t.Error(w)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a scrape with NATS gone did not end")
	}
}
