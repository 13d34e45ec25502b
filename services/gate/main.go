// Command gate runs Flotilla's gate: it holds manual workflow steps until an
// authenticated, authorized approval arrives over NATS, HTTP or the CLI.
package main

import (
	"context"
	"net/http"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/service"
)

func main() {
	var (
		common service.Common
		opts   gate.Options
	)
	service.Main("gate", &common, opts.BindFlags, func(ctx context.Context, d service.Deps) error {
		cfg := &gate.Config{}
		if opts.Config != "" {
			var err error
			if cfg, err = gate.LoadConfig(opts.Config); err != nil {
				return err
			}
		}
		opts.Instruments = d.Instruments
		g, err := gate.New(d.Kube, d.JS, d.Log, cfg, opts)
		if err != nil {
			return err
		}
		return g.Run(ctx, &http.Server{Addr: opts.Listen, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	})
}
