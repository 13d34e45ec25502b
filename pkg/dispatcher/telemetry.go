package dispatcher

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// metrics are the dispatcher's Prometheus metrics.
type metrics struct {
	dispatched *prometheus.CounterVec
	refused    *prometheus.CounterVec
	consumers  *bus.ConsumerMetrics
	clusters   *clusterCollector
	dead       *bus.DeadLetters
}

func newMetrics(d *Dispatcher) *metrics {
	return &metrics{
		dispatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_work_dispatched_total", Help: "Work messages sent to clusters, by cluster and kind (apply, delete).",
		}, []string{"cluster", "kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_dispatch_failures_total", Help: "Deploy steps not dispatched, by reason (no cluster matched, ...).",
		}, []string{"reason"}),
		consumers: bus.NewConsumerMetrics(),
		dead:      bus.NewDeadLetters(d.log),
		clusters:  &clusterCollector{d: d, desc: prometheus.NewDesc("flotilla_cluster_available", "1 for the AVAILABLE condition status each ManagedCluster has (True, False or Unknown).", []string{"cluster", "status"}, nil)},
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.dispatched, m.refused, m.consumers, m.clusters, m.dead.Collector()}
}

// clusterCollector reports every ManagedCluster's availability as the
// registry (the hub, as cached) says at scrape time.
type clusterCollector struct {
	d    *Dispatcher
	desc *prometheus.Desc
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	objs, err := c.d.clusters.List(labels.Everything())
	if err != nil {
		return
	}
	for _, obj := range objs {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		mc := &clusterv1.ManagedCluster{}
		if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, mc) != nil {
			continue
		}
		for _, status := range []string{"True", "False", "Unknown"} {
			v := 0.0
			if availableStatus(mc) == status {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, mc.Name, status)
		}
	}
}

func availableStatus(mc *clusterv1.ManagedCluster) string {
	for _, cond := range mc.Status.Conditions {
		if cond.Type == clusterv1.ConditionAvailable {
			return string(cond.Status)
		}
	}
	return "Unknown"
}
