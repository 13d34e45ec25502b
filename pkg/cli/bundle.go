package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// newBundle is `kubectl flotilla bundle`: work carried by hand to a site
// with no link to the hub.
func newBundle(o *Options) *cobra.Command {
	cmd := &cobra.Command{Use: "bundle", Short: "Carry the hub's work by hand to a cluster whose site has no link to the hub"}
	var cluster, out string
	export := &cobra.Command{
		Use:   "export --cluster NAME [NAMESPACE/APPLICATION...] -o FILE",
		Short: "Write a cluster's newest work (all of its applications, or those named) to one file, as the hub sealed it",
		Long: `Export reads the newest work the hub sent a cluster from the hub's work stream, each
message exactly as the dispatcher sealed it with the hub's work key, into one bundle file.
Carried to the cluster's site, its agent (--bundle-dir) verifies every seal and applies the
work as if it had arrived over NATS; an altered, foreign or older bundle is refused whole.

It logs in to the hub's NATS (--nats-url, --nats-creds, --nats-ca) as an identity that may
read work: the work holds the release's objects, Secrets too.`,
		Example: `  kubectl flotilla bundle export --cluster prod-eu -o prod-eu.bundle
  kubectl flotilla bundle export --cluster prod-eu demo/demo -o demo.bundle`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cluster == "" {
				return fmt.Errorf("bundle export: --cluster is required")
			}
			if out == "" {
				return fmt.Errorf("bundle export: -o FILE is required")
			}
			conn := o.NATS
			conn.Name, conn.InboxPrefix = "kubectl-flotilla-bundle", bus.BundlerInboxPrefix
			nc, _, err := conn.Connect()
			if err != nil {
				return fmt.Errorf("bundle export: %w", err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			b, err := bundle.Export(cmd.Context(), js, cluster, args, time.Now())
			if err != nil {
				return fmt.Errorf("bundle %w", err)
			}
			var buf bytes.Buffer
			if err := b.Encode(&buf); err != nil {
				return err
			}
			// It holds the release's Secrets: readable by its owner alone.
			if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
				return fmt.Errorf("bundle export: %w", err)
			}
			fmt.Fprintf(o.IO.Out, "bundle %s: %d work message(s) of cluster %s, %s\n", out, len(b.Messages), cluster, b.Digest)
			return nil
		},
	}
	export.Flags().StringVar(&cluster, "cluster", "", "the cluster whose work to export")
	export.Flags().StringVarP(&out, "output", "o", "", "the bundle file to write")
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Send a status bundle carried from a site with no link to the hub: its reports count as its agent's",
		Long: `Import sends a status bundle, written by a cluster's agent at a site with no link
(<bundle-dir>/outbox/status.bundle), to the hub: the planner takes its reports into the
Applications' status and the dispatcher its heartbeat into the ManagedCluster's, each only
if the bundle is signed with the key the cluster joined with, and none older than what the
hub has. It logs in to the hub's NATS as an identity that may import (--nats-creds).`,
		Example: "  kubectl flotilla bundle import status.bundle",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("bundle import: %w", err)
			}
			s, err := bundle.DecodeStatus(data)
			if err != nil {
				return fmt.Errorf("bundle import: %w", err)
			}
			conn := o.NATS
			conn.Name, conn.InboxPrefix = "kubectl-flotilla-bundle", bus.BundlerInboxPrefix
			_, js, err := conn.Connect()
			if err != nil {
				return fmt.Errorf("bundle import: %w", err)
			}
			defer js.Conn().Close()
			// One ID per bundle file: importing it twice is once. (Of the
			// whole file, signature too: a forgery of the same reports
			// must not take the genuine bundle's ID.)
			sum := sha256.Sum256(data)
			id := s.Cluster + ".status-bundle." + hex.EncodeToString(sum[:16])
			e := events.New(id, "/cli/bundle-import", events.TypeStatusBundle, s.Cluster, &events.StatusBundleData{Cluster: s.Cluster, Bundle: data})
			ack, err := bus.Publish(cmd.Context(), js, bus.StatusBundleSubject(s.Cluster), e)
			if err != nil {
				return fmt.Errorf("bundle import: %w", err)
			}
			if ack.Duplicate {
				fmt.Fprintf(o.IO.Out, "status bundle of cluster %s (%d messages, written %s) was already imported: nothing sent\n", s.Cluster, len(s.Messages), s.WrittenAt.Format(time.RFC3339))
				return nil
			}
			fmt.Fprintf(o.IO.Out, "status bundle of cluster %s (%d messages, written %s) sent to the hub\n", s.Cluster, len(s.Messages), s.WrittenAt.Format(time.RFC3339))
			return nil
		},
	}
	cmd.AddCommand(export, imp)
	return cmd
}
