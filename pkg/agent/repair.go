package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// repair re-applies the desired version of the item's object; if that
// changed anything (someone else's change or deletion was put back), the
// drift is reported.
func (m *monitor) repair(ctx context.Context, it item) error {
	if sent, err := m.sendUnsent(ctx, it); sent || err != nil {
		// The repair was done; its report had not gone out.
		return err
	}
	work, err := m.a.work(ctx, it.app)
	if err != nil || work == nil || work.Delete {
		return err
	}
	objs, err := m.a.desiredObjects(ctx, work)
	if err != nil {
		return fmt.Errorf("repair %s of %s: %w", it.object, it.app, err)
	}
	r := it.object
	if apply.Selects(work.ReadOnly, r) {
		return nil // read-only: what the cluster has is what counts
	}
	i := slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool {
		return o.GetKind() == r.Kind && o.GetName() == r.Name && o.GroupVersionKind().Group == r.Group
	})
	if i < 0 {
		return nil // not in the newest release: pruned, not drifted
	}
	// The object as the informer last saw it, at least as new as the event
	// that queued this repair.
	observed := m.cached(r)
	applied, err := m.a.applier.ApplyObject(ctx, it.app, work.Release, objs[i])
	if err != nil {
		return fmt.Errorf("repair %s of %s: %w", r, it.app, err)
	}
	change, drift := driftOf(it.deleted, observed, applied)
	if !drift {
		return nil
	}
	m.a.metrics.drift.WithLabelValues(m.a.opts.Cluster, change).Inc()
	// The repair belongs to the release whose objects it put back.
	if w, ok := m.a.traceOf(it.app); ok && w.release == work.Release {
		ctx = trace.ContextWithSpanContext(ctx, w.span)
	}
	ctx, span := m.a.tracer.Start(ctx, "repair drift", trace.WithAttributes(telemetry.AttrCluster.String(m.a.opts.Cluster),
		telemetry.AttrObject.String(r.Kind+" "+r.Namespace+"/"+r.Name), telemetry.AttrDriftChange.String(change)))
	defer span.End()
	m.a.log.InfoContext(ctx, "drift repaired", "app", it.app.String(), "object", r.Kind+" "+r.Name, "change", change)
	gvk := applied.GroupVersionKind()
	d := &events.ClusterDriftData{AppRef: work.AppRef, Cluster: m.a.opts.Cluster, Change: change,
		Object: events.ObjectStatus{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: r.Namespace, Name: r.Name,
			Generation: applied.GetGeneration(), Health: events.HealthInProgress}}
	id := fmt.Sprintf("%s.drift.%s.%d", m.a.opts.Cluster, it.app.UID, time.Now().UnixNano())
	e := events.New(id, events.SourceAgent(m.a.opts.Cluster), events.TypeClusterDrift, it.app.String(), d)
	e.TraceParent, e.TraceState = telemetry.Inject(ctx)
	if err := m.publishDrift(ctx, it, e); err != nil {
		telemetry.SetError(span, err)
		return err
	}
	return nil
}

// driftOf says whether a repair put back a drift, and which: a deletion
// (the event said so) or a modification. observed is the object as the
// informer saw it before the repair, applied as the repair left it.
func driftOf(deleted bool, observed, applied *unstructured.Unstructured) (change string, drift bool) {
	if deleted {
		return "deleted", true
	}
	switch {
	case observed == nil || applied.GetUID() != observed.GetUID():
		// Deleted since the informer saw it: its deletion event reports it.
		return "", false
	case observed.GetGeneration() != 0:
		// Someone else's spec change moved the generation; putting ours back
		// moves it again. An apply that changes nothing leaves it alone (the
		// event was our own apply).
		return "modified", applied.GetGeneration() != observed.GetGeneration()
	default:
		// Kinds without a generation: their resourceVersion moves only when
		// their content does.
		return "modified", applied.GetResourceVersion() != observed.GetResourceVersion()
	}
}

// publishDrift sends a drift report, or keeps it for the item's retry
// (its ID unchanged: JetStream drops a copy that did arrive).
func (m *monitor) publishDrift(ctx context.Context, it item, e *events.Event) error {
	if _, err := bus.Publish(ctx, m.a.js, bus.StatusSubject(m.a.opts.Cluster, it.app.Namespace, it.app.Name), e); err != nil {
		m.mu.Lock()
		m.unsent[it] = e
		m.mu.Unlock()
		return fmt.Errorf("report drift of %s: %w", it.object, err)
	}
	return nil
}

// sendUnsent sends the drift report an earlier try of it could not; sent
// says there was one.
func (m *monitor) sendUnsent(ctx context.Context, it item) (sent bool, err error) {
	m.mu.Lock()
	e := m.unsent[it]
	delete(m.unsent, it)
	m.mu.Unlock()
	if e == nil {
		return false, nil
	}
	return true, m.publishDrift(ctx, it, e)
}
