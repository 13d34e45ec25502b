package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Tail reads every event on a stream's subjects, from the start, through one
// ordered consumer that it reuses: each call to Events returns what arrived
// so far. Tests and tools use it to see exactly what was published.
type Tail struct {
	cons jetstream.Consumer
	mu   sync.Mutex
	seen []*events.Event
}

// NewTail opens a tail of stream filtered to subjects.
func NewTail(ctx context.Context, js jetstream.JetStream, stream string, subjects ...string) (*Tail, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return nil, fmt.Errorf("tail %s %v: %w", stream, subjects, err)
	}
	return &Tail{cons: cons}, nil
}

// Events returns every event published so far, in order. A message that is
// not a valid event is an error: nothing Flotilla publishes may be one.
func (t *Tail) Events() ([]*events.Event, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		batch, err := t.cons.FetchNoWait(1000)
		if err != nil {
			return nil, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			e, err := events.DecodeMsg(msg)
			if err != nil {
				return nil, fmt.Errorf("message %s on %s: %w", msg.Headers().Get(events.HeaderID), msg.Subject(), err)
			}
			t.seen = append(t.seen, e)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n < 1000 {
			return append([]*events.Event(nil), t.seen...), nil
		}
	}
}
