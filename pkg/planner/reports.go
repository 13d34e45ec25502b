package planner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// consumeReports consumes the clusters' reports (the status stream, a lane
// per cluster), the dispatcher's answers (the dispatch stream) and the
// gate's decisions (the gate stream), until the returned stop. Each stream
// has one writer: what arrives on it is judged as that writer's
// (reportInput). A message given up on after bus.MaxDeliver deliveries is
// counted and logged as a dead letter.
func (p *Planner) consumeReports(ctx context.Context) (stop func(), err error) {
	var running []jetstream.ConsumeContext
	var watching []*nats.Subscription
	stop = func() {
		for _, c := range running {
			c.Stop()
		}
		for _, s := range watching {
			_ = s.Unsubscribe()
		}
	}
	for _, stream := range []string{bus.StreamStatus, bus.StreamDispatch, bus.StreamGate} {
		sub, err := p.metrics.deadLetters.Watch(p.js.Conn(), stream)
		if err != nil {
			stop()
			return nil, fmt.Errorf("planner: %w", err)
		}
		watching = append(watching, sub)
	}
	// Before lanes, one consumer read every cluster's reports.
	if err := p.js.DeleteConsumer(ctx, bus.StreamStatus, p.opts.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		p.log.Warn("delete the consumer of every cluster's reports", "err", err)
	}
	go p.lanes.run(ctx)
	for _, c := range []struct {
		stream, filter string
	}{
		{bus.StreamDispatch, ""},
		{bus.StreamGate, bus.GateDecisionsFilter},
	} {
		cons, err := p.js.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{
			Durable:       p.opts.Consumer,
			FilterSubject: c.filter,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       30 * time.Second,
			MaxAckPending: 64,
			MaxDeliver:    bus.MaxDeliver,
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("planner: consumer on %s: %w", c.stream, err)
		}
		p.metrics.consumers.Watch(cons)
		cc, err := bus.Consume(ctx, cons, p.log, p.handleReport)
		if err != nil {
			stop()
			return nil, fmt.Errorf("planner: %w", err)
		}
		running = append(running, cc)
	}
	// Status bundles carried from sites with no link.
	cons, err := p.js.CreateOrUpdateConsumer(ctx, bus.StreamBundles, jetstream.ConsumerConfig{
		Durable: p.opts.Consumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
		MaxAckPending: 4, MaxDeliver: bus.MaxDeliver,
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("planner: consumer on %s: %w", bus.StreamBundles, err)
	}
	p.metrics.consumers.Watch(cons)
	cc, err := bus.Consume(ctx, cons, p.log, p.handleStatusBundle)
	if err != nil {
		stop()
		return nil, fmt.Errorf("planner: %w", err)
	}
	running = append(running, cc)
	return stop, nil
}

// handleReport feeds a dispatcher, gate or cluster report into its
// application's run, in a span under the one that sent it.
func (p *Planner) handleReport(ctx context.Context, e *events.Event) error {
	kind, attrs := "report", []attribute.KeyValue(nil)
	switch d := e.Data.(type) {
	case *events.StepDispatchedData:
		kind, attrs = "dispatch", []attribute.KeyValue{telemetry.AttrStep.String(d.Step), telemetry.AttrClusters.StringSlice(d.Clusters)}
	case *events.ClusterStatusData:
		kind, attrs = "status", []attribute.KeyValue{telemetry.AttrCluster.String(d.Cluster), telemetry.AttrPhase.String(string(d.Phase)), telemetry.AttrHealthy.Bool(d.Healthy())}
	case *events.StepDecisionData:
		kind, attrs = "decision", []attribute.KeyValue{telemetry.AttrStep.String(d.Step)}
	case *events.ClusterDriftData:
		kind, attrs = "drift", []attribute.KeyValue{telemetry.AttrCluster.String(d.Cluster)}
	}
	ctx, span := p.reportSpan(ctx, e, kind, attrs...)
	defer span.End()
	err := p.report(ctx, e)
	switch {
	case bus.IsRetry(err):
		// Another replica saved first, or the run is not saved yet: normal, not a failure.
		span.SetAttributes(telemetry.AttrRetry.Bool(true))
	case err != nil:
		telemetry.SetError(span, err)
	default:
		p.metrics.reports.WithLabelValues(kind).Inc()
	}
	return err
}

// report turns a report into the run's input, applies it and saves the
// run; the status is written by the reconcile it enqueues.
func (p *Planner) report(ctx context.Context, e *events.Event) error {
	ref, in, err := p.reportInput(ctx, e)
	if err != nil || in == nil && ref.UID == "" {
		return err
	}
	key := ref.Namespace + "/" + ref.Application
	unlock := p.locks.lock(key)
	defer unlock()
	rec, rev, err := p.store.load(ctx, ref.Namespace, ref.Application)
	if err != nil {
		return err
	}
	if err := p.flush(ctx, rec, rev); err != nil {
		return err
	}
	if rec == nil || rec.UID != ref.UID || rec.Run.Revision < ref.Revision {
		// Either the report is about an application that is gone (drop it),
		// or it overtook the save of the release it reports on (retry,
		// backing off), or it names a release that never comes: a few
		// tries, then it is dropped with the reason.
		if !p.appExists(ref) {
			return nil
		}
		if e.Deliveries >= maxReportTries {
			return bus.Terminate(fmt.Errorf("%s names release %s (revision %d) of %s, which the planner does not have after %d tries", e.Type, ref.Release, ref.Revision, key, e.Deliveries))
		}
		return bus.Retry(retryDelay(e.Deliveries), fmt.Errorf("no saved run yet for %s", ref.Release))
	}
	if rep, ok := in.(workflow.ClusterReport); ok && rep.Phase == events.ClusterDeleted {
		if !slices.Contains(rec.Deleted, rep.Cluster) {
			rec.Deleted = append(rec.Deleted, rep.Cluster)
		}
		in = nil
	}
	if d, ok := in.(workflow.Dispatched); ok {
		// Even an older release's clusters hold objects to remove on deletion.
		rec.place(d.Clusters)
	}
	if _, ok := in.(workflow.Decision); ok && ref.Attempt != rec.Run.Attempt {
		return nil // a decision on a run since restarted
	}
	var transitions []workflow.Transition
	if in != nil {
		if ref.Revision != rec.Run.Revision {
			if _, ok := in.(workflow.Dispatched); !ok {
				return nil // about an older release
			}
			in = nil // only what was placed is kept
		} else {
			transitions = rec.Run.Apply(p.now(), in)
			rec.noteOutcome()
		}
	}
	if _, err := p.commit(ctx, rec, rev, transitions, effects{}); err != nil {
		if errors.Is(err, errConflict) {
			return bus.Retry(50*time.Millisecond, err)
		}
		return err
	}
	p.queue.Add(key)
	return nil
}

// maxReportTries is how often a report on a release the planner has not
// saved is tried: a report overtaking its release's save succeeds at the
// first or second; the backoff gives a slow save about 25 s.
const maxReportTries = 8

// retryDelay backs off from 200 ms, doubling, to at most 6.4 s.
func retryDelay(deliveries uint64) time.Duration {
	d := 200 * time.Millisecond
	for i := uint64(1); i < deliveries && d < 6400*time.Millisecond; i++ {
		d *= 2
	}
	return d
}

// reportInput is what a report says to the run of the release it names. A
// report with nothing for the run (drift: logged only) returns no input and
// no release.
func (p *Planner) reportInput(ctx context.Context, e *events.Event) (events.AppRef, workflow.Input, error) {
	// Every writer speaks only on subjects its NATS user alone may publish
	// to: a report counts only from its writer's subject for what it is
	// about, never from what its body claims.
	from := func(want string) error {
		if e.Topic != want {
			return bus.Terminate(fmt.Errorf("%s %s arrived on %s: it counts only from %s", e.Type, e.ID, e.Topic, want))
		}
		return nil
	}
	switch d := e.Data.(type) {
	case *events.StepDispatchedData:
		if err := from(bus.DispatchSubject(d.Namespace, d.Application)); err != nil {
			return events.AppRef{}, nil, err
		}
		return d.AppRef, workflow.Dispatched{Step: d.Step, Clusters: d.Clusters, Reason: d.Reason, Error: d.Error}, nil
	case *events.ClusterStatusData:
		if err := from(bus.StatusSubject(d.Cluster, d.Namespace, d.Application)); err != nil {
			return events.AppRef{}, nil, err
		}
		return d.AppRef, workflow.ClusterReport{Cluster: d.Cluster, Step: d.Step, Phase: d.Phase, Healthy: d.Healthy(), Message: reportMessage(d), ObservedAt: d.ObservedAt}, nil
	case *events.StepDecisionData:
		if err := from(bus.GateSubject("decisions", d.Namespace, d.Application)); err != nil {
			return events.AppRef{}, nil, err
		}
		dec := workflow.Decision{Step: d.Step, Approve: e.Type == events.TypeStepApproved, Reason: d.Reason, Approvals: d.Approvals}
		if n := len(d.Approvals); n > 0 {
			dec.By, dec.Reason = d.Approvals[n-1].Approver, d.Approvals[n-1].Reason
		}
		return d.AppRef, dec, nil
	case *events.ClusterDriftData:
		if err := from(bus.StatusSubject(d.Cluster, d.Namespace, d.Application)); err != nil {
			return events.AppRef{}, nil, err
		}
		p.log.InfoContext(ctx, "drift repaired", "app", d.Namespace+"/"+d.Application, "cluster", d.Cluster, "object", d.Object.Kind+" "+d.Object.Name, "change", d.Change)
		return events.AppRef{}, nil, nil
	}
	return events.AppRef{}, nil, bus.Terminate(fmt.Errorf("planner does not handle %s (on %s)", e.Type, e.Topic))
}

// appExists reports whether the hub (as cached) has the application ref names.
func (p *Planner) appExists(ref events.AppRef) bool {
	obj, err := p.apps.ByNamespace(ref.Namespace).Get(ref.Application)
	if err != nil {
		return false
	}
	m, err := meta.Accessor(obj)
	return err == nil && string(m.GetUID()) == ref.UID && m.GetDeletionTimestamp() == nil
}

// reportMessage names what is not healthy, for the step and the STATUS column.
func reportMessage(d *events.ClusterStatusData) string {
	if d.Message != "" || d.Phase != events.ClusterApplied {
		return d.Message
	}
	for _, o := range d.Objects {
		if o.Health != events.HealthCurrent {
			msg := fmt.Sprintf("%s %s is %s", o.Kind, o.Name, o.Health)
			if o.Message != "" {
				msg += ": " + o.Message
			}
			return msg
		}
	}
	return ""
}
