// Command flotilla-dev runs the whole product on one machine for `make up`:
// the test bed, NATS, the planner, dispatcher and gate, and an agent per
// managed cluster, each a separate process. It stays in the foreground as
// their supervisor; SIGTERM (make down) stops everything in order.
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
)

func main() {
	var o devenv.Options
	fs := pflag.NewFlagSet("flotilla-dev", pflag.ExitOnError)
	fs.StringVar(&o.Dir, "dir", ".flotilla", "state directory")
	fs.StringVar(&o.BinDir, "bin", "bin", "Flotilla's binaries")
	fs.StringVar(&o.TestbedBinDir, "testbed-bin", "bin/testbed", "the control plane's binaries")
	fs.DurationVar(&o.Heartbeat, "heartbeat", 2*time.Second, "agents' heartbeat interval")
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
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	reported := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
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
