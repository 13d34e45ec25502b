// Command dispatcher runs Flotilla's dispatcher: it turns deploy steps into
// per-cluster work and keeps the hub's ManagedClusters, talking to the other
// services only through NATS JetStream.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/dispatcher"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

func main() {
	var (
		hubOpts  hub.Options
		natsOpts = bus.ConnectOptions{Name: "flotilla-dispatcher"}
		logOpts  telemetry.LogOptions
		opts     dispatcher.Options
	)
	fs := pflag.NewFlagSet("dispatcher", pflag.ExitOnError)
	hubOpts.BindFlags(fs)
	natsOpts.BindFlags(fs)
	logOpts.BindFlags(fs)
	opts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if err := run(hubOpts, natsOpts, logOpts, opts); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

func run(hubOpts hub.Options, natsOpts bus.ConnectOptions, logOpts telemetry.LogOptions, opts dispatcher.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := logOpts.Logger(os.Stderr, "dispatcher")
	if err != nil {
		return err
	}
	cfg, err := hubOpts.RESTConfig()
	if err != nil {
		return err
	}
	nc, js, err := natsOpts.Connect()
	if err != nil {
		return err
	}
	defer nc.Drain()
	d, err := dispatcher.New(cfg, js, log, opts)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
