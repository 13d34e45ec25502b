// Command cluster-agent runs inside one managed cluster with only an
// outbound connection to NATS: it joins the hub, pulls its cluster's work,
// applies it, and reports health.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/pkg/agent"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

func main() {
	var (
		// The agent's own cluster: in-cluster config unless --kubeconfig.
		clusterOpts = hub.Options{Target: "this cluster's API server"}
		natsOpts    = bus.ConnectOptions{}
		logOpts     telemetry.LogOptions
		opts        agent.Options
	)
	fs := pflag.NewFlagSet("cluster-agent", pflag.ExitOnError)
	clusterOpts.BindFlags(fs)
	natsOpts.BindFlags(fs)
	logOpts.BindFlags(fs)
	opts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	natsOpts.Name = "flotilla-agent-" + opts.Cluster
	natsOpts.InboxPrefix = bus.InboxPrefix(opts.Cluster)
	if err := run(clusterOpts, natsOpts, logOpts, opts); err != nil {
		fmt.Fprintln(os.Stderr, "cluster-agent:", err)
		os.Exit(1)
	}
}

func run(clusterOpts hub.Options, natsOpts bus.ConnectOptions, logOpts telemetry.LogOptions, opts agent.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := logOpts.Logger(os.Stderr, "cluster-agent")
	if err != nil {
		return err
	}
	cfg, err := clusterOpts.RESTConfig()
	if err != nil {
		return err
	}
	nc, js, err := natsOpts.Connect()
	if err != nil {
		return err
	}
	defer nc.Drain()
	a, err := agent.New(cfg, nc, js, log, opts)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
