package gate

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// natsRetry is how soon an approval the gate failed to take is redelivered.
const natsRetry = time.Second

// handleApproval takes a signed approval event from the approvals stream
// (bus.Consume decoded it). A refusal terminates the message; a failure of
// the gate (or a race lost too often) has it redelivered.
func (g *Gate) handleApproval(ctx context.Context, e *events.Event) error {
	d, ok := e.Data.(*events.ApprovalData)
	if !ok || e.Type != events.TypeApproval {
		err := refuse(ReasonMalformed, "malformed approval: type %s is not %s", e.Type, events.TypeApproval)
		g.audit(ctx, e.ID, nil, ViaNATS, "", err)
		return bus.Terminate(err)
	}
	m := bus.Delivered(ctx)
	if m == nil {
		return bus.Terminate(errors.New("approval without its message: cannot check its signature"))
	}
	ident, err := g.cfg.verifyNATS(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil {
		err := refuse(ReasonUnauthenticated, "%v", err)
		g.audit(ctx, e.ID, d, ViaNATS, "", err)
		return bus.Terminate(err)
	}
	// The signature covers ce-time: an old signed approval republished later
	// is stale. Judge it by when the stream stored it, so a gate that was
	// down still counts approvals sent meanwhile.
	stored := e.Stored
	if stored.IsZero() {
		stored = g.now()
	}
	if skew := stored.Sub(e.Time); skew > MaxSkew || skew < -MaxSkew {
		err := refuse(ReasonUnauthenticated, "ce-time is %v off the time the stream stored the approval (at most %v)", skew.Round(time.Second), MaxSkew)
		g.audit(ctx, e.ID, d, ViaNATS, ident.Name, err)
		return bus.Terminate(err)
	}
	err = g.take(ctx, decision{ID: e.ID, Data: d, Via: ViaNATS, Identity: ident.Name, Groups: ident.Groups, Delegate: ident.Delegate, Namespaces: ident.trusted(), TraceParent: e.TraceParent})
	switch {
	case err == nil:
		return nil
	case retryable(err):
		return bus.Retry(natsRetry, err)
	default:
		return bus.Terminate(err)
	}
}

// rejectedApproval audits a message on the approvals stream that is not a
// CloudEvent of the catalog (bus.Consume terminates it).
func (g *Gate) rejectedApproval(ctx context.Context, m jetstream.Msg, err error) {
	g.audit(ctx, orText(m.Headers().Get(events.HeaderID), "malformed"), nil, ViaNATS, "", refuse(ReasonMalformed, "malformed approval: %v", err))
}
