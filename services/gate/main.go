// Command gate runs Flotilla's gate: it holds manual workflow steps until an
// authenticated, authorized approval arrives over NATS, HTTP or the CLI.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/hub"
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
		hubClients, err := hub.NewClients(d.Kube)
		if err != nil {
			return fmt.Errorf("gate: %w", err)
		}
		opts.Instruments = d.Instruments
		g, err := gate.New(hubClients.Dynamic, hubClients.Kube, d.JS, d.Log, cfg, opts)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", opts.Listen)
		if err != nil {
			return fmt.Errorf("gate: webhook: %w", err)
		}
		return g.Run(ctx, ln, &http.Server{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	})
}
