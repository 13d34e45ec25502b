package bus

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxDeliver bounds how often a consumer is handed one message: a message
// no retry can help (a report on a release that never comes, a handler
// failing for good) stops there instead of looping, and its end is told as
// a dead letter.
const MaxDeliver = 20

// DeadLetterSubject is where the server tells that a consumer of stream
// gave up on a message after MaxDeliver deliveries.
func DeadLetterSubject(stream string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + ".*"
}

// DeadLetters counts and logs, once each, the messages a service's
// consumers gave up on: the metric flotilla_dead_letters_total{stream,
// consumer} and one warning naming the message.
type DeadLetters struct {
	total *prometheus.CounterVec
	log   *slog.Logger
}

// NewDeadLetters counts nothing until Watch.
func NewDeadLetters(log *slog.Logger) *DeadLetters {
	return &DeadLetters{log: log, total: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flotilla_dead_letters_total",
		Help: "Messages a consumer gave up on after the most deliveries it allows (MaxDeliver), by stream and consumer.",
	}, []string{"stream", "consumer"})}
}

// Collector is the metric to register.
func (d *DeadLetters) Collector() prometheus.Collector { return d.total }

// Watch follows the dead letters of stream's consumers until the returned
// subscription is unsubscribed (or the connection closes).
func (d *DeadLetters) Watch(nc *nats.Conn, stream string) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(DeadLetterSubject(stream), func(m *nats.Msg) {
		var adv struct {
			Stream     string `json:"stream"`
			Consumer   string `json:"consumer"`
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries uint64 `json:"deliveries"`
		}
		if err := json.Unmarshal(m.Data, &adv); err != nil {
			d.log.Warn("unreadable dead-letter advisory", "subject", m.Subject, "err", err)
			return
		}
		d.total.WithLabelValues(adv.Stream, adv.Consumer).Inc()
		d.log.Warn("message dropped after the most deliveries allowed", "stream", adv.Stream, "consumer", adv.Consumer,
			"sequence", adv.StreamSeq, "deliveries", adv.Deliveries)
	})
	if err != nil {
		return nil, fmt.Errorf("watch dead letters of %s: %w", stream, err)
	}
	return sub, nil
}
