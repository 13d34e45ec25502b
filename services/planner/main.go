// Command planner runs Flotilla's planner: it watches Applications on the
// hub, cuts releases and runs their workflows, talking to the other services
// only through NATS JetStream.
package main

import (
	"context"

	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/service"
)

func main() {
	var (
		common service.Common
		opts   planner.Options
	)
	service.Main("planner", &common, opts.BindFlags, func(ctx context.Context, d service.Deps) error {
		opts.Instruments = d.Instruments
		clients, err := hub.NewClients(d.Kube)
		if err != nil {
			return err
		}
		p, err := planner.New(clients, d.JS, d.Log, opts)
		if err != nil {
			return err
		}
		return p.Run(ctx)
	})
}
