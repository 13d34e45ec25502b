// Package service owns the life of a Flotilla service process: the flags
// every service shares (hub client, NATS, logging), signal handling, and
// the connections handed to the service's Run.
package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
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
	// AfterParse, if set, runs once flags are parsed (to derive options
	// from others, such as an agent's inbox prefix from its cluster name).
	AfterParse func()
}

// Deps are what a service's Run gets.
type Deps struct {
	Log  *slog.Logger
	Kube *rest.Config
	NC   *nats.Conn
	JS   jetstream.JetStream
}

// Main parses os.Args with the common flags and those bind adds, connects,
// and runs run until SIGINT or SIGTERM. It exits 1 with the error.
func Main(name string, c *Common, bind func(*pflag.FlagSet), run func(context.Context, Deps) error) {
	fs := pflag.NewFlagSet(name, pflag.ExitOnError)
	c.Kube.BindFlags(fs)
	c.NATS.BindFlags(fs)
	c.Log.BindFlags(fs)
	if bind != nil {
		bind(fs)
	}
	_ = fs.Parse(os.Args[1:])
	if c.NATS.Name == "" {
		c.NATS.Name = "flotilla-" + name
	}
	if c.AfterParse != nil {
		c.AfterParse()
	}
	if err := start(name, c, run); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func start(name string, c *Common, run func(context.Context, Deps) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := c.Log.Logger(os.Stderr, name)
	if err != nil {
		return err
	}
	cfg, err := c.Kube.RESTConfig()
	if err != nil {
		return err
	}
	nc, js, err := c.NATS.Connect()
	if err != nil {
		return err
	}
	defer nc.Drain()
	return run(ctx, Deps{Log: log, Kube: cfg, NC: nc, JS: js})
}
