package planner

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/trace"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// commit publishes the events of transitions, then saves rec by
// compare-and-set at rev, then records fx and the spans the transitions
// imply. Event IDs are deterministic: a planner that crashed after
// publishing republishes duplicates that JetStream drops, and of two
// planners racing, one saves and the other reloads. Spans and metrics are
// recorded only once the save succeeded: a lost compare-and-set did nothing.
func (p *Planner) commit(ctx context.Context, rec *Record, rev uint64, transitions []workflow.Transition, fx effects) (uint64, error) {
	for _, t := range transitions {
		e, err := p.stepEvent(ctx, rec, t)
		if err != nil {
			return rev, err
		}
		if _, err := bus.Publish(ctx, p.js, bus.StepSubject(rec.Run.Namespace, rec.Run.Application), e); err != nil {
			return rev, err
		}
		s := rec.Run.Steps[t.Index]
		sctx := trace.ContextWithSpanContext(ctx, rec.stepContext(t.Index))
		p.log.InfoContext(sctx, "step "+events.Verb(t.Type), "app", rec.Run.Namespace+"/"+rec.Run.Application, "release", rec.Run.Release, "step", s.Name, "message", s.Message)
	}
	if p.afterPublish != nil {
		if err := p.afterPublish(); err != nil {
			return rev, err
		}
	}
	fx.add(p.traceTransitions(rec, transitions))
	newRev, err := p.store.save(ctx, rec.Run.Namespace, rec.Run.Application, rec, rev)
	if err != nil {
		return rev, err
	}
	p.emit(ctx, fx)
	return newRev, nil
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
