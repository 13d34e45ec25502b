package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

// NewRegistry is a service's metrics registry, with the Go runtime's and
// the process's collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// MetricsHandler serves g in the Prometheus text format.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// ServeMetrics serves /metrics (and /healthz) on addr until ctx ends. It
// returns once listening, so a bad address fails the service at start.
func ServeMetrics(ctx context.Context, addr string, g prometheus.Gatherer) (net.Addr, <-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", MetricsHandler(g))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), errc, nil
}

// Instruments are what a service's code records with: its tracer and the
// registry its metrics join. The zero value records spans nowhere and keeps
// metrics unserved, for tests that do not look.
type Instruments struct {
	Tracer  trace.Tracer
	Metrics prometheus.Registerer
}

// T is the tracer, or one that records nothing.
func (i Instruments) T() trace.Tracer {
	if i.Tracer == nil {
		return NoopTracer()
	}
	return i.Tracer
}

// Register adds cs to the registry, if there is one.
func (i Instruments) Register(cs ...prometheus.Collector) error {
	if i.Metrics == nil {
		return nil
	}
	for _, c := range cs {
		if err := i.Metrics.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
