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
	s, err := bundle.Admit(ctx, e, func(ctx context.Context, cluster string) (string, error) { return registeredKey(ctx, p.js, cluster) })
	if err != nil {
		if bus.IsTerminal(err) {
			p.log.Warn("status bundle refused", "err", err)
		}
		return err
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
		case err != nil && !bus.IsTerminal(err):
			// The whole bundle again (a retry, or the hub's state not
			// reachable): what it already applied changes nothing twice.
			return err
		case err != nil:
			p.log.Warn("status bundle: report refused", "cluster", s.Cluster, "message", i, "err", err)
		default:
			n++
		}
	}
	p.log.Info("status bundle imported", "cluster", s.Cluster, "writtenAt", s.WrittenAt, "reports", n)
	return nil
}

// registeredKey is the key cluster joined the hub with ("" none), while
// the hub accepts it: a cluster no longer accepted reports nothing, by
// bundle as by NATS (its credential is revoked).
func registeredKey(ctx context.Context, js jetstream.JetStream, cluster string) (string, error) {
	accepted, err := bus.LastBySubject(ctx, js.Conn(), bus.ServiceAPI, bus.KVStream(bus.BucketClusters), bus.AcceptedSubject(cluster))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", err
	}
	if err != nil || string(accepted.Data) != "true" || accepted.Header.Get("KV-Operation") != "" {
		return "", bus.Terminate(fmt.Errorf("status bundle of cluster %s refused: the hub does not accept the cluster", cluster))
	}
	m, err := bus.LastBySubject(ctx, js.Conn(), bus.ServiceAPI, bus.KVStream(bus.BucketClusters), bus.AgentKeySubject(cluster))
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
