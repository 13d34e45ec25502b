package bus

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerMetrics reports, when scraped, how many messages wait for the
// consumers a service watches: the first sign of a service falling behind.
type ConsumerMetrics struct {
	mu         sync.Mutex
	consumers  []jetstream.Consumer
	pending    *prometheus.Desc
	ackPending *prometheus.Desc
}

// NewConsumerMetrics reports nothing until Watch.
func NewConsumerMetrics() *ConsumerMetrics {
	labels := []string{"stream", "consumer"}
	return &ConsumerMetrics{
		pending:    prometheus.NewDesc("flotilla_consumer_pending_messages", "Messages not yet delivered to the consumer.", labels, nil),
		ackPending: prometheus.NewDesc("flotilla_consumer_ack_pending_messages", "Messages delivered to the consumer and not yet acknowledged.", labels, nil),
	}
}

// Watch adds a consumer to report on.
func (m *ConsumerMetrics) Watch(c jetstream.Consumer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.consumers = append(m.consumers, c)
}

// Describe implements prometheus.Collector.
func (m *ConsumerMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.pending
	ch <- m.ackPending
}

// Collect implements prometheus.Collector: it asks the server (a consumer
// it cannot reach is left out of the scrape rather than failing it).
func (m *ConsumerMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	cs := append([]jetstream.Consumer(nil), m.consumers...)
	m.mu.Unlock()
	for _, c := range cs {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := c.Info(ctx)
		cancel()
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(info.NumPending), info.Stream, info.Name)
		ch <- prometheus.MustNewConstMetric(m.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), info.Stream, info.Name)
	}
}
