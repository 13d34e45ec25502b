// Command gate runs Flotilla's gate: it holds manual workflow steps until an
// authenticated, authorized approval arrives over NATS, HTTP or the CLI.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

func main() {
	var (
		hubOpts  hub.Options
		natsOpts = bus.ConnectOptions{Name: "flotilla-gate"}
		logOpts  telemetry.LogOptions
		opts     gate.Options
	)
	fs := pflag.NewFlagSet("gate", pflag.ExitOnError)
	hubOpts.BindFlags(fs)
	natsOpts.BindFlags(fs)
	logOpts.BindFlags(fs)
	opts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if err := run(hubOpts, natsOpts, logOpts, opts); err != nil {
		fmt.Fprintln(os.Stderr, "gate:", err)
		os.Exit(1)
	}
}

func run(hubOpts hub.Options, natsOpts bus.ConnectOptions, logOpts telemetry.LogOptions, opts gate.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := logOpts.Logger(os.Stderr, "gate")
	if err != nil {
		return err
	}
	cfg := &gate.Config{}
	if opts.Config != "" {
		if cfg, err = gate.LoadConfig(opts.Config); err != nil {
			return err
		}
	}
	restCfg, err := hubOpts.RESTConfig()
	if err != nil {
		return err
	}
	nc, js, err := natsOpts.Connect()
	if err != nil {
		return err
	}
	defer nc.Drain()
	g, err := gate.New(restCfg, js, log, cfg, opts)
	if err != nil {
		return err
	}
	return g.Run(ctx, &http.Server{Addr: opts.Listen, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
}
