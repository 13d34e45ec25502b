// Package service owns the life of a Flotilla service process: the flags
// every service shares (hub client, NATS, logging, metrics), signal
// handling, tracing set up from the OTEL_* environment, the /metrics
// endpoint, and the connections handed to the service's Run.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"k8s.io/client-go/rest"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Common are the options every service binds.
type Common struct {
	Kube hub.Options
	NATS bus.ConnectOptions
	Log  telemetry.LogOptions
	// MetricsAddr serves /metrics; "0" turns it off.
	MetricsAddr string
	// TraceAttrs join the service's trace resource (the agent's cluster).
	TraceAttrs []attribute.KeyValue
	// AfterParse, if set, runs once flags are parsed (to derive options
	// from others, such as an agent's inbox prefix from its cluster name).
	AfterParse func()
	// BeforeConnect, if set, runs before the service connects to NATS (an
	// agent getting its own credential first).
	BeforeConnect func(ctx context.Context, log *slog.Logger) error
}

// Deps are what a service's Run gets.
type Deps struct {
	Log  *slog.Logger
	Kube *rest.Config
	NC   *nats.Conn
	JS   jetstream.JetStream
	// Instruments are the service's tracer and the registry /metrics serves.
	Instruments telemetry.Instruments
}

// Main parses os.Args with the common flags and those bind adds, connects,
// and runs run until SIGINT or SIGTERM. It exits 1 with the error.
func Main(name string, c *Common, bind func(*pflag.FlagSet), run func(context.Context, Deps) error) {
	fs := pflag.NewFlagSet(name, pflag.ExitOnError)
	c.Kube.BindFlags(fs)
	c.NATS.BindFlags(fs)
	c.Log.BindFlags(fs)
	fs.StringVar(&c.MetricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint (0: off)")
	if bind != nil {
		bind(fs)
	}
	_ = fs.Parse(os.Args[1:])
	if c.NATS.Name == "" {
		c.NATS.Name = "flotilla-" + name
	}
	// Replies come to the service's own inboxes, the only ones its NATS
	// user may read (the agent's main sets its own before this).
	if c.NATS.InboxPrefix == "" {
		c.NATS.InboxPrefix = bus.ServiceInboxPrefix(name)
	}
	if c.AfterParse != nil {
		c.AfterParse()
	}
	if err := start(name, c, os.Stderr, run); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// start runs the service, logging to logTo.
func start(name string, c *Common, logTo io.Writer, run func(context.Context, Deps) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := c.Log.Logger(logTo, name)
	if err != nil {
		return err
	}
	cfg, err := c.Kube.RESTConfig()
	if err != nil {
		return err
	}
	tracing, err := telemetry.NewTracing(ctx, "flotilla-"+name, c.TraceAttrs...)
	if err != nil {
		return err
	}
	defer func() {
		// Spans of the last moments still go out, but a missing collector
		// does not hold the exit for long.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(sctx); err != nil {
			log.Warn("flush spans", "err", err)
		}
	}()
	// The SDK reports failed exports through its process-wide handler:
	// into this service's log, not a bare stderr line.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
	log.Info("tracing", "exporting", tracing.Exporting)
	reg := telemetry.NewRegistry()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if c.MetricsAddr != "0" && c.MetricsAddr != "" {
		addr, errc, err := telemetry.ServeMetrics(ctx, c.MetricsAddr, reg)
		if err != nil {
			return err
		}
		// The endpoint failing later stops the service, as failing at start does.
		go func() {
			select {
			case err := <-errc:
				cancel(err)
			case <-ctx.Done():
			}
		}()
		log.Info("serving metrics", "addr", "http://"+addr.String()+"/metrics")
	}
	if c.BeforeConnect != nil {
		if err := c.BeforeConnect(ctx, log); err != nil {
			return err
		}
	}
	nc, js, err := c.NATS.Connect()
	if err != nil {
		return err
	}
	defer nc.Drain()
	deps := Deps{Log: log, Kube: cfg, NC: nc, JS: js, Instruments: telemetry.Instruments{Tracer: tracing.Tracer(), Metrics: reg}}
	if err := run(ctx, deps); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
