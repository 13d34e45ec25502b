package bus

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// consumerInfoTimeout bounds a scrape however many consumers a service has
// and however slow NATS answers.
const consumerInfoTimeout = time.Second

// ConsumerMetrics reports, when scraped, how many messages wait for the
// consumers a service watches: the first sign of a service falling behind.
type ConsumerMetrics struct {
	mu         sync.Mutex
	consumers  map[[2]string]jetstream.Consumer
	pending    *prometheus.Desc
	ackPending *prometheus.Desc
	up         *prometheus.Desc
}

// NewConsumerMetrics reports nothing until Watch.
func NewConsumerMetrics() *ConsumerMetrics {
	labels := []string{"stream", "consumer"}
	return &ConsumerMetrics{
		consumers:  map[[2]string]jetstream.Consumer{},
		pending:    prometheus.NewDesc("flotilla_consumer_pending_messages", "Messages not yet delivered to the consumer.", labels, nil),
		ackPending: prometheus.NewDesc("flotilla_consumer_ack_pending_messages", "Messages delivered to the consumer and not yet acknowledged.", labels, nil),
		up:         prometheus.NewDesc("flotilla_consumer_info_up", "1 if the consumer's state could be read from NATS at this scrape, else 0 (its pending counts are then missing).", labels, nil),
	}
}

// Watch adds a consumer to report on; watching one again (a consumer
// created anew after a reconnect) replaces it.
func (m *ConsumerMetrics) Watch(c jetstream.Consumer) {
	info := c.CachedInfo()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.consumers[[2]string{info.Stream, info.Name}] = c
}

// Unwatch stops reporting on a consumer (deleted, as a cluster's report
// lane is when the cluster leaves).
func (m *ConsumerMetrics) Unwatch(c jetstream.Consumer) {
	info := c.CachedInfo()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.consumers, [2]string{info.Stream, info.Name})
}

// Describe implements prometheus.Collector.
func (m *ConsumerMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.pending
	ch <- m.ackPending
	ch <- m.up
}

// Collect implements prometheus.Collector: it asks the server about every
// consumer at once, within consumerInfoTimeout.
func (m *ConsumerMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	cs := make(map[[2]string]jetstream.Consumer, len(m.consumers))
	for k, c := range m.consumers {
		cs[k] = c
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), consumerInfoTimeout)
	defer cancel()
	var (
		wg  sync.WaitGroup
		out sync.Mutex
	)
	for k, c := range cs {
		wg.Go(func() {
			info, err := c.Info(ctx)
			out.Lock()
			defer out.Unlock()
			if err != nil {
				ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, 0, k[0], k[1])
				return
			}
			ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, 1, k[0], k[1])
			ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(info.NumPending), k[0], k[1])
			ch <- prometheus.MustNewConstMetric(m.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), k[0], k[1])
		})
	}
	wg.Wait()
}
