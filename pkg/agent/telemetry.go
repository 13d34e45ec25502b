package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// metrics are the agent's Prometheus metrics; every series names the
// cluster, so one Prometheus scraping many agents tells them apart.
type metrics struct {
	applyDuration *prometheus.HistogramVec
	applyErrors   *prometheus.CounterVec
	drift         *prometheus.CounterVec
	work          *prometheus.CounterVec
	consumers     *bus.ConsumerMetrics
}

func newMetrics() *metrics {
	return &metrics{
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flotilla_agent_apply_duration_seconds", Help: "Time to apply one release's objects (server-side apply and prune) in the cluster.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10),
		}, []string{"cluster"}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_agent_apply_errors_total", Help: "Apply errors by reason: an object the cluster refused (reported, not retried), or a transient failure of a whole apply (retried).",
		}, []string{"cluster", "reason"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_agent_drift_corrections_total", Help: "Managed objects put back after someone changed or deleted them, by change.",
		}, []string{"cluster", "change"}),
		work: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_agent_work_total", Help: "Work messages handled, by kind (apply, delete) and result (applied, failed, retry).",
		}, []string{"cluster", "kind", "result"}),
		consumers: bus.NewConsumerMetrics(),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.applyDuration, m.applyErrors, m.drift, m.work, m.consumers}
}

// workTrace is where an application's newest work sits in its release's
// trace: reports and drift repairs hang under its span, and the wait until
// healthy is recorded once the objects are.
type workTrace struct {
	release string
	span    trace.SpanContext
	// waitingSince is set while the release is applied but not yet healthy.
	waitingSince time.Time
}

func (a *Agent) setTrace(app apply.App, w workTrace) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.traces[app] = w
}

func (a *Agent) traceOf(app apply.App) (workTrace, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.traces[app]
	return w, ok
}

// noteHealth ends the wait-until-healthy span when st, a report on the
// release the wait is for, says every object is healthy.
func (a *Agent) noteHealth(ctx context.Context, st *events.ClusterStatusData) {
	app := apply.App{Namespace: st.Namespace, Name: st.Application, UID: st.UID}
	a.mu.Lock()
	w, ok := a.traces[app]
	done := ok && !w.waitingSince.IsZero() && w.release == st.Release && st.Healthy()
	if done {
		a.traces[app] = workTrace{release: w.release, span: w.span}
	}
	a.mu.Unlock()
	if !done {
		return
	}
	telemetry.Record(ctx, a.tracer, telemetry.Span{
		Name: "wait healthy", Parent: w.span, Start: w.waitingSince, End: time.Now(),
		Attrs: []attribute.KeyValue{telemetry.AttrCluster.String(a.opts.Cluster), telemetry.AttrRelease.String(st.Release),
			telemetry.AttrObjects.Int(len(st.Objects))},
	})
}
