// Command dispatcher runs Flotilla's dispatcher: it turns deploy steps into
// per-cluster work and keeps the hub's ManagedClusters, talking to the other
// services only through NATS JetStream.
package main

import (
	"context"
	"fmt"

	"k8s.io/client-go/dynamic"

	"github.com/flotilla-dev/flotilla/pkg/dispatcher"
	"github.com/flotilla-dev/flotilla/pkg/service"
)

func main() {
	var (
		common service.Common
		opts   dispatcher.Options
	)
	service.Main("dispatcher", &common, opts.BindFlags, func(ctx context.Context, d service.Deps) error {
		opts.Instruments = d.Instruments
		hub, err := dynamic.NewForConfig(d.Kube)
		if err != nil {
			return fmt.Errorf("hub client: %w", err)
		}
		disp, err := dispatcher.New(hub, d.JS, d.Log, opts)
		if err != nil {
			return err
		}
		return disp.Run(ctx)
	})
}
