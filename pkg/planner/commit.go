package planner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// commit saves rec by compare-and-set at rev with the transitions as its
// outbox, then publishes their events, then records fx and the spans the
// transitions imply. The save comes first: a planner killed between the
// two leaves a record that already says what happened, and the next
// planner to load it publishes the events (flush); had the events gone out
// first, a planner killed before saving left a record that did not know
// them, which then dropped the answers to them (a dispatcher's
// step.dispatched) while the events published again were duplicates the
// stream dropped: the step waited for ever. Event IDs are deterministic:
// published twice within the stream's duplicate window, the second is
// dropped. Of two planners racing, one saves and the other, having
// published nothing, reloads. Spans and metrics are recorded once saved.
func (p *Planner) commit(ctx context.Context, rec *Record, rev uint64, transitions []workflow.Transition, fx effects) (uint64, error) {
	// Every event is made before anything is written: a snapshot that
	// cannot be read fails the pass with nothing saved.
	evs, err := p.stepEvents(ctx, rec, transitions)
	if err != nil {
		return rev, err
	}
	rec.Outbox = slices.Clone(transitions)
	fx.add(p.traceTransitions(rec, transitions))
	newRev, err := p.store.save(ctx, rec.Run.Namespace, rec.Run.Application, rec, rev)
	if err != nil {
		return rev, err
	}
	p.emit(ctx, fx)
	if p.afterSave != nil {
		if err := p.afterSave(); err != nil {
			return newRev, err
		}
	}
	if err := p.publish(ctx, rec, transitions, evs); err != nil {
		return newRev, err
	}
	p.outbox.flushed(rec, newRev)
	if p.afterPublish != nil {
		if err := p.afterPublish(); err != nil {
			return newRev, err
		}
	}
	return newRev, nil
}

// stepEvents are the events of transitions of rec.
func (p *Planner) stepEvents(ctx context.Context, rec *Record, transitions []workflow.Transition) ([]*events.Event, error) {
	evs := make([]*events.Event, 0, len(transitions))
	for _, t := range transitions {
		if t.Index < 0 || t.Index >= len(rec.Run.Steps) {
			return nil, fmt.Errorf("run %s: transition of step %d of %d", rec.Run.Release, t.Index, len(rec.Run.Steps))
		}
		e, err := p.stepEvent(ctx, rec, t)
		if err != nil {
			return nil, err
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// publish publishes the events of transitions, in order.
func (p *Planner) publish(ctx context.Context, rec *Record, transitions []workflow.Transition, evs []*events.Event) error {
	for i, t := range transitions {
		if _, err := bus.Publish(ctx, p.js, bus.StepSubject(rec.Run.Namespace, rec.Run.Application), evs[i]); err != nil {
			return err
		}
		s := rec.Run.Steps[t.Index]
		sctx := trace.ContextWithSpanContext(ctx, rec.stepContext(t.Index))
		p.log.InfoContext(sctx, "step "+events.Verb(t.Type), "app", rec.Run.Namespace+"/"+rec.Run.Application, "release", rec.Run.Release, "step", s.Name, "message", s.Message)
	}
	return nil
}

// flush publishes the events of the record's last transitions (its
// outbox) unless this planner saw them out: a planner killed between
// saving and publishing, or whose publish failed, leaves them unsent. It
// runs on every record loaded, before anything else may write over the
// outbox. Events already in the stream are not sent again, however long
// ago they went (the duplicate window is ten minutes; a planner may be
// down for longer): each commit's events are published in order, after
// the save, on the application's own subject, so the newest there says
// how many of the outbox went out — all of it, or the ones up to it.
func (p *Planner) flush(ctx context.Context, rec *Record, rev uint64) error {
	if rec == nil || rec.Run == nil || len(rec.Outbox) == 0 || rec.Deleting || p.outbox.done(rec, rev) {
		return nil
	}
	evs, err := p.stepEvents(ctx, rec, rec.Outbox)
	if err != nil {
		return fmt.Errorf("flush the step events of %s: %w", rec.Run.Release, err)
	}
	subject := bus.StepSubject(rec.Run.Namespace, rec.Run.Application)
	st, err := p.js.Stream(ctx, bus.StreamSteps)
	if err != nil {
		return fmt.Errorf("flush the step events of %s: %w", rec.Run.Release, err)
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("flush the step events of %s: %w", rec.Run.Release, err)
	}
	from := 0
	if err == nil {
		id := last.Header.Get(jetstream.MsgIDHeader)
		if id == deletionID(rec) {
			// The application's deletion went out after the outbox (its
			// save was lost): no step event may follow it.
			p.outbox.flushed(rec, rev)
			return nil
		}
		from = slices.IndexFunc(evs, func(e *events.Event) bool { return e.ID == id }) + 1
	}
	if from < len(evs) {
		p.log.Info("publishing the step events a planner saved but did not send", "app", rec.Run.Namespace+"/"+rec.Run.Application, "release", rec.Run.Release, "events", len(evs)-from)
		if err := p.publish(ctx, rec, rec.Outbox[from:], evs[from:]); err != nil {
			return fmt.Errorf("flush the step events of %s: %w", rec.Run.Release, err)
		}
	}
	p.outbox.flushed(rec, rev)
	return nil
}

// outboxes remembers, per application, the record revision whose outbox
// this planner saw published.
type outboxes struct {
	mu   sync.Mutex
	sent map[string]uint64
}

func (o *outboxes) done(rec *Record, rev uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent[recordKey(rec.Run.Namespace, rec.Run.Application)] == rev
}

func (o *outboxes) flushed(rec *Record, rev uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sent == nil {
		o.sent = map[string]uint64{}
	}
	o.sent[recordKey(rec.Run.Namespace, rec.Run.Application)] = rev
}

func (o *outboxes) forget(ns, app string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.sent, recordKey(ns, app))
}

// stepEvent is the event of one transition; a deploy step that starts or
// waits carries its policies and the release's snapshot.
func (p *Planner) stepEvent(ctx context.Context, rec *Record, t workflow.Transition) (*events.Event, error) {
	s := rec.Run.Steps[t.Index]
	d := &events.StepData{
		AppRef: rec.Run.AppRef, Step: s.Name, StepType: s.Type, Index: t.Index,
		Message: s.Message, Reason: s.Reason, Properties: s.Properties,
	}
	if s.Type == workflow.StepTypeDeploy && (t.Type == events.TypeStepStarted || t.Type == events.TypeStepSuspended) {
		for _, pol := range rec.Policies {
			if slices.Contains(s.Policies, pol.Name) {
				d.Policies = append(d.Policies, pol)
			}
		}
		snap, err := snapshot.ForStep(ctx, p.snaps, rec.Snapshot)
		if err != nil {
			return nil, err
		}
		d.Snapshot, d.TakeOver, d.ReadOnly = snap, rec.TakeOver, rec.ReadOnly
	}
	id := events.StepEventID(rec.Run.AppRef, s.Name, t.Type)
	e := events.New(id, events.SourcePlanner, t.Type, rec.Run.Namespace+"/"+rec.Run.Application, d)
	e.TraceParent = stepTraceParent(rec, t.Index)
	return e, nil
}
