// Command planner runs Flotilla's planner: it watches Applications on the
// hub, cuts releases and runs their workflows, talking to the other services
// only through NATS JetStream.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

func main() {
	var (
		hubOpts  hub.Options
		natsOpts = bus.ConnectOptions{Name: "flotilla-planner"}
		logOpts  telemetry.LogOptions
		opts     planner.Options
	)
	fs := pflag.NewFlagSet("planner", pflag.ExitOnError)
	hubOpts.BindFlags(fs)
	natsOpts.BindFlags(fs)
	logOpts.BindFlags(fs)
	opts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])

	if err := run(hubOpts, natsOpts, logOpts, opts); err != nil {
		fmt.Fprintln(os.Stderr, "planner:", err)
		os.Exit(1)
	}
}

func run(hubOpts hub.Options, natsOpts bus.ConnectOptions, logOpts telemetry.LogOptions, opts planner.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := logOpts.Logger(os.Stderr, "planner")
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
	p, err := planner.New(cfg, js, log, opts, planner.Hooks{})
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
