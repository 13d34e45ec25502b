// Command flotilla-dev runs the whole product on one machine for `make up`:
// the test bed, NATS, the planner, dispatcher and gate, and an agent per
// managed cluster, each a separate process, the second cluster's agent at
// an air-gapped site (its own NATS leaf node, linked to the hub through a
// proxy). It stays in the foreground as their supervisor, starting again
// any process that dies (devenv: with a back-off, as a kubelet would); SIGTERM (make
// down) stops everything in order, SIGUSR1 (make link-down) cuts the
// site's link and SIGUSR2 (make link-up) restores it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/flotilla-dev/flotilla/pkg/devenv"
	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
)

func main() {
	var o devenv.Options
	fs := pflag.NewFlagSet("flotilla-dev", pflag.ExitOnError)
	fs.StringVar(&o.Dir, "dir", ".flotilla", "state directory")
	fs.StringVar(&o.BinDir, "bin", "bin", "Flotilla's binaries")
	fs.StringVar(&o.TestbedBinDir, "testbed-bin", "bin/testbed", "the control plane's binaries")
	fs.DurationVar(&o.Heartbeat, "heartbeat", 2*time.Second, "agents' heartbeat interval")
	fs.IntVar(&o.Replicas, "replicas", 1, "replicas of each hub service (planner, dispatcher, gate)")
	fs.IntVar(&o.NATSNodes, "nats-nodes", 1, "the hub's NATS servers: 1, or a cluster (3) whose streams are replicated")
	_ = fs.Parse(os.Args[1:])
	o.Log = func(format string, args ...any) {
		fmt.Printf("%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-dev:", err)
		os.Exit(1)
	}
}

func run(o devenv.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready := filepath.Join(o.Dir, "ready")
	_ = os.Remove(ready)
	env, err := devenv.Up(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		o.Log("stopping")
		env.Down()
		_ = os.Remove(ready)
		o.Log("stopped")
	}()
	if err := os.WriteFile(ready, []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
		return err
	}
	link := make(chan os.Signal, 4)
	signal.Notify(link, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(link)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	reported := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig := <-link:
			var err error
			if sig == syscall.SIGUSR1 {
				err = env.LinkDown(linkproxy.Reset)
			} else {
				err = env.LinkUp()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "flotilla-dev: link:", err)
				continue
			}
			up, since := env.Link()
			o.Log("site %s's link to the hub: up=%v since %s", env.Site, up, since.Format("15:04:05.000"))
		case <-t.C:
			for _, err := range env.Died() {
				if !reported[err.Error()] {
					reported[err.Error()] = true
					fmt.Fprintln(os.Stderr, "flotilla-dev: process died:", err)
				}
			}
		}
	}
}
