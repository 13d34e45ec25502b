package planner

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// handleStatusBundle feeds the reports of a status bundle, carried from a
// site with no link and imported at the hub, into their runs as if its
// agent had sent them: they count only if the bundle is signed with the
// key the cluster joined with (whoever imported it could forge nothing),
// and a report older than what a run has changes nothing.
func (p *Planner) handleStatusBundle(ctx context.Context, e *events.Event) error {
	d, ok := e.Data.(*events.StatusBundleData)
	if !ok {
		return bus.Terminate(fmt.Errorf("planner does not handle %s on the bundles stream", e.Type))
	}
	if want := bus.StatusBundleSubject(d.Cluster); e.Topic != want {
		return bus.Terminate(fmt.Errorf("status bundle of %s arrived on %s, not %s", d.Cluster, e.Topic, want))
	}
	s, err := bundle.DecodeStatus(d.Bundle)
	if err != nil {
		return bus.Terminate(err)
	}
	if s.Cluster != d.Cluster {
		return bus.Terminate(fmt.Errorf("status bundle of cluster %s imported as %s's", s.Cluster, d.Cluster))
	}
	key, err := registeredKey(ctx, p.js, s.Cluster)
	if err != nil {
		return err
	}
	if err := s.Verify(key); err != nil {
		p.log.Warn("status bundle refused", "cluster", s.Cluster, "err", err)
		return bus.Terminate(err)
	}
	n := 0
	for i, m := range s.Messages {
		r, err := events.Decode(m.Msg())
		if err != nil {
			p.log.Warn("status bundle: report refused", "cluster", s.Cluster, "message", i, "err", err)
			continue
		}
		if r.Type != events.TypeClusterStatus {
			continue // heartbeats are the dispatcher's
		}
		r.Deliveries = e.Deliveries
		switch err := p.handleReport(ctx, r); {
		case bus.IsRetry(err):
			return err // the whole bundle again: what it already applied changes nothing twice
		case err != nil:
			p.log.Warn("status bundle: report refused", "cluster", s.Cluster, "message", i, "err", err)
		default:
			n++
		}
	}
	p.log.Info("status bundle imported", "cluster", s.Cluster, "writtenAt", s.WrittenAt, "reports", n)
	return nil
}

// registeredKey is the key cluster joined the hub with ("" none).
func registeredKey(ctx context.Context, js jetstream.JetStream, cluster string) (string, error) {
	m, err := bus.LastBySubject(ctx, js.Conn(), bus.KVStream(bus.BucketClusters), bus.AgentKeySubject(cluster))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return "", nil
	}
	return string(m.Data), nil
}
