// Command dispatcher runs Flotilla's dispatcher: it turns deploy steps into
// per-cluster work and keeps the hub's ManagedClusters, talking to the other
// services only through NATS JetStream; with --live-read-listen it also
// serves the live reads the hub's API server forwards (kubectl flotilla get).
package main

import (
	"context"
	"fmt"
	"net"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/dispatcher"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/liveread"
	"github.com/flotilla-dev/flotilla/pkg/query"
	"github.com/flotilla-dev/flotilla/pkg/seal"
	"github.com/flotilla-dev/flotilla/pkg/service"
)

func main() {
	var (
		common service.Common
		opts   dispatcher.Options
		live   liveread.Options
	)
	bind := func(fs *pflag.FlagSet) {
		opts.BindFlags(fs)
		live.BindFlags(fs)
	}
	service.Main("dispatcher", &common, bind, func(ctx context.Context, d service.Deps) error {
		err := live.Validate()
		if err != nil {
			return err
		}
		opts.Instruments = d.Instruments
		if opts.SealKey != "" {
			if opts.Sealer, err = seal.LoadSealer(opts.SealKey); err != nil {
				return fmt.Errorf("dispatcher: %w", err)
			}
		}
		if opts.IssuerAgentKey != "" {
			// The system-account login that pushes revocations is its own
			// connection: the service's user is in the Flotilla account.
			sys := common.NATS
			sys.Creds, sys.NKey, sys.Name = opts.SystemCreds, "", sys.Name+"-issuer"
			snc, _, err := sys.Connect()
			if err != nil {
				return fmt.Errorf("dispatcher: issuer: %w", err)
			}
			defer snc.Close()
			if opts.Issuer, err = loadIssuer(opts, snc); err != nil {
				return err
			}
		}
		// Each site is kept over a login of its own, in the site's own
		// account at the hub (bus/sites.go).
		opts.SiteConn = func(site string) (*nats.Conn, error) {
			file, ok := opts.SiteCreds[site]
			if !ok {
				return nil, fmt.Errorf("no --site-creds for site %s", site)
			}
			sc := common.NATS
			sc.Creds, sc.NKey = file, ""
			sc.InboxPrefix, sc.Name = bus.SiteInboxPrefix(site), sc.Name+"-site-"+site
			nc, _, err := sc.Connect()
			return nc, err
		}
		hubClients, err := hub.NewClients(d.Kube)
		if err != nil {
			return fmt.Errorf("dispatcher: %w", err)
		}
		disp, err := dispatcher.New(hubClients.Dynamic, d.JS, d.Log, opts)
		if err != nil {
			return err
		}
		if live.Listen == "" {
			return disp.Run(ctx)
		}
		proxy, err := liveread.LoadFrontProxy(ctx, hubClients.Kube)
		if err != nil {
			return fmt.Errorf("dispatcher: live reads: %w", err)
		}
		// Live reads are asked over a connection of their own (agents at
		// the hub answer them from the clusters' account), or, for a
		// cluster at a site, in that site's own account.
		lc := common.NATS
		lc.InboxPrefix, lc.Name = bus.LiveReadInboxPrefix, lc.Name+"-live-read"
		lnc, _, err := lc.Connect()
		if err != nil {
			return fmt.Errorf("dispatcher: live reads: %w", err)
		}
		defer lnc.Close()
		ask := liveread.AskFunc(func(ctx context.Context, cluster string, req query.Request) (*query.Response, error) {
			if nc := disp.LiveReadConn(cluster); nc != nil {
				return query.Do(ctx, nc, cluster, req)
			}
			return query.Do(ctx, lnc, cluster, req)
		})
		srv, err := liveread.New(hubClients.Kube, liveread.HubApplications{Client: hubClients.Dynamic}, ask, proxy, d.Log, d.Instruments)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", live.Listen)
		if err != nil {
			return fmt.Errorf("dispatcher: live reads: %w", err)
		}
		g, ctx := errgroup.WithContext(ctx)
		g.Go(func() error { return disp.Run(ctx) })
		g.Go(func() error { return srv.Serve(ctx, ln, live) })
		return g.Wait()
	})
}

func loadIssuer(opts dispatcher.Options, sys *nats.Conn) (*creds.Issuer, error) {
	agents, err := creds.Seed(opts.IssuerAgentKey)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: --issuer-agent-key: %w", err)
	}
	operator, err := creds.Seed(opts.IssuerOperatorKey)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: --issuer-operator-key: %w", err)
	}
	iss, err := creds.NewIssuer(agents, operator, opts.Account, sys)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	return iss, nil
}
