package gate

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// take counts one authenticated decision, or refuses it, and audits it
// either way: every way in ends here. The error is a refusal (see
// refusals.go) or a failure of the gate.
func (g *Gate) take(ctx context.Context, in decision) error {
	err := g.record(ctx, in)
	approver, _ := in.approver()
	g.audit(ctx, in.ID, in.Data, in.Via, approver, err)
	return err
}

// record applies a decision to its step's wait (decide's rules, written
// with the wait's compare-and-set) and sends a final one to the planner.
//
// Recorded first, sent second: of two decisions racing on the last
// approval only the one whose record lands goes to the planner, so the
// record and the planner never disagree. A failed send leaves the decision
// recorded and unsent; the next decision on the step, or the gate's
// resend, sends it (its fixed ID drops repeats).
func (g *Gate) record(ctx context.Context, in decision) error {
	d := in.Data
	var out outcome
	w, _, err := g.waits.change(ctx, d.Namespace, d.Application, func(cur *waiting) (*waiting, edit, error) {
		next, o, err := decide(cur, in, g.now())
		if err != nil {
			return nil, keep, err
		}
		out = o
		return next, put, nil
	})
	if errors.Is(err, errContended) {
		return refuse(ReasonContended, "too many concurrent decisions on %s/%s: try again", d.Namespace, d.Application)
	}
	if err != nil {
		if refused(err) && w != nil && w.decided() && !w.Sent {
			// Decided, but the send failed: send it now (the refusal stands).
			if serr := g.send(ctx, w); serr != nil {
				return serr
			}
		}
		return err
	}
	lctx := telemetry.Extract(ctx, w.TraceParent, w.TraceState)
	if out != counted {
		if err := g.send(ctx, w); err != nil {
			// Recorded all the same: the gate sends it again shortly.
			g.log.WarnContext(lctx, "decision recorded, not yet sent", "app", d.Namespace+"/"+d.Application, "err", err)
		}
	}
	approver, _ := in.approver()
	g.log.InfoContext(lctx, "decision recorded", "app", d.Namespace+"/"+d.Application, "release", w.Release, "step", w.Step, "approver", approver,
		"via", in.Via, "decision", d.Decision, "approvals", approvals(w), "min", w.MinApprovals, "final", out != counted)
	return nil
}

// send publishes w's decision to the planner and marks it sent.
func (g *Gate) send(ctx context.Context, w *waiting) error {
	dec := &events.StepDecisionData{AppRef: w.AppRef, Step: w.Step, Approvals: w.Approvals, Reason: w.Reason}
	de := events.New(fmt.Sprintf("%s.%s.decided", events.RunID(w.AppRef), w.Step), events.SourceGate, w.Decision, w.Namespace+"/"+w.Application, dec)
	de.TraceParent, de.TraceState = telemetry.Inject(trace.ContextWithSpanContext(ctx, w.waitContext()))
	ack, err := bus.Publish(ctx, g.js, bus.GateSubject("decisions", w.Namespace, w.Application), de)
	if err != nil {
		return fmt.Errorf("send the decision on %s/%s: %w", w.Namespace, w.Application, err)
	}
	g.markSent(ctx, w)
	if ack.Duplicate {
		return nil // sent before (a resend racing the first): its wait is recorded
	}
	decision := events.DecisionApprove
	if w.Decision == events.TypeStepRejected {
		decision = events.DecisionReject
	}
	g.traceWait(ctx, w, decision, "")
	return nil
}

// markSent notes on the stored wait that its decision went out. Failing
// only means a later resend, which the decision's fixed ID drops.
func (g *Gate) markSent(ctx context.Context, w *waiting) {
	w.Sent = true
	_, _, err := g.waits.change(ctx, w.Namespace, w.Application, func(cur *waiting) (*waiting, edit, error) {
		if cur == nil || !cur.sameRun(w.AppRef) || cur.Step != w.Step || cur.Decision != w.Decision || cur.Sent {
			return nil, keep, nil // gone, replaced, or marked already
		}
		next := cur.clone()
		next.Sent = true
		return next, put, nil
	})
	if err != nil && ctx.Err() == nil {
		g.log.Warn("mark a decision sent", "app", w.Namespace+"/"+w.Application, "err", err)
	}
}

// sendUnsent sends decisions recorded but not sent (the gate stopped, or
// NATS failed, in between).
func (g *Gate) sendUnsent(ctx context.Context) error {
	apps, err := g.waits.apps(ctx)
	if err != nil {
		return err
	}
	for _, a := range apps {
		w, _, err := g.waits.get(ctx, a[0], a[1])
		if err != nil || w == nil || !w.decided() || w.Sent {
			continue
		}
		if err := g.send(ctx, w); err != nil {
			g.log.Warn("send a recorded decision", "app", w.Namespace+"/"+w.Application, "err", err)
			continue
		}
		g.log.Info("sent a decision recorded before", "app", w.Namespace+"/"+w.Application, "release", w.Release, "step", w.Step)
	}
	return nil
}
