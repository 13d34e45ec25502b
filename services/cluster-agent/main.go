// Command cluster-agent runs inside one managed cluster with only an
// outbound connection to NATS: it joins the hub, pulls its cluster's work,
// applies it, and reports health.
package main

import (
	"context"
	"log/slog"

	"github.com/flotilla-dev/flotilla/pkg/agent"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/service"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

func main() {
	var opts agent.Options
	// The agent's own cluster: in-cluster config unless --kubeconfig.
	common := service.Common{Kube: hub.Options{Target: "this cluster's API server"}}
	common.AfterParse = func() {
		common.NATS.Name = "flotilla-agent-" + opts.Cluster
		common.NATS.InboxPrefix = bus.InboxPrefix(opts.Cluster) // its NATS user reads only its own inboxes
		common.NATS.API = bus.ClusterAPI                        // it lives in the clusters' account
		common.TraceAttrs = append(common.TraceAttrs, telemetry.AttrCluster.String(opts.Cluster))
	}
	// With its own identity the agent first makes sure it holds a
	// credential (asking to join with the bootstrap one until accepted);
	// it signs its joins with the key it logs in with.
	common.BeforeConnect = func(ctx context.Context, log *slog.Logger) (err error) {
		if opts.Identity != "" {
			if opts.Key, err = agent.Enroll(ctx, log, opts, common.NATS); err != nil {
				return err
			}
			common.NATS.Creds, common.NATS.NKey = opts.Identity, ""
			return nil
		}
		opts.Key, err = common.NATS.Key()
		return err
	}
	service.Main("cluster-agent", &common, opts.BindFlags, func(ctx context.Context, d service.Deps) error {
		opts.Instruments = d.Instruments
		clients, err := hub.NewClients(d.Kube)
		if err != nil {
			return err
		}
		a, err := agent.New(clients, d.NC, d.JS, d.Log, opts)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	})
}
