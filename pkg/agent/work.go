package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/seal"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// stale says why d is older than what this agent has (empty: it is not):
// its application was removed, or a later release, attempt or step of it
// was applied. The same work again (a redelivery) is not stale.
func (a *Agent) stale(d *events.WorkData) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if d.Delete {
		return "" // a removal comes after every release of its application
	}
	if a.removed[d.UID] {
		return fmt.Sprintf("application %s/%s (uid %s) was removed from this cluster", d.Namespace, d.Application, d.UID)
	}
	prev := a.desired[apply.App{Namespace: d.Namespace, Name: d.Application, UID: d.UID}]
	if prev != nil && prev.Supersedes(d.AppRef, d.StepIndex) {
		return fmt.Sprintf("release %s (attempt %d, step %d) is older than %s (attempt %d, step %d), applied", d.Release, d.Attempt, d.StepIndex, prev.Release, prev.Attempt, prev.StepIndex)
	}
	return ""
}

// handleWork applies one work message (the release's objects, or removal)
// in a span under the dispatcher's, with a child per object applied.
func (a *Agent) handleWork(ctx context.Context, e *events.Event) (err error) {
	var subject string
	var header nats.Header
	var data []byte
	if m := bus.Delivered(ctx); m != nil {
		subject, header, data = m.Subject(), m.Headers(), m.Data()
	}
	d, err := a.admit(e, subject, header, data)
	if err != nil {
		return err
	}
	return a.applyWork(ctx, e, d)
}

// admit checks work before anything of it is applied: it is for this
// cluster, sealed by the hub (when the agent has its key), and not older
// than what this agent applied (a sealed release replayed later must not
// roll the cluster back, nor bring a removed application back).
func (a *Agent) admit(e *events.Event, subject string, header nats.Header, data []byte) (*events.WorkData, error) {
	d, ok := e.Data.(*events.WorkData)
	if !ok || d.Cluster != a.opts.Cluster {
		return nil, bus.Terminate(fmt.Errorf("work %s is not for cluster %s", e.ID, a.opts.Cluster))
	}
	if a.verifier != nil {
		err := seal.ErrUnsealed
		if subject != "" {
			err = a.verifier.Verify(subject, header, data)
		}
		if err != nil {
			a.metrics.work.WithLabelValues(a.opts.Cluster, "apply", "refused").Inc()
			return nil, bus.Terminate(fmt.Errorf("work %s refused, nothing applied: %w", e.ID, err))
		}
	}
	if stale := a.stale(d); stale != "" {
		a.metrics.work.WithLabelValues(a.opts.Cluster, "apply", "refused").Inc()
		return nil, bus.Terminate(fmt.Errorf("work %s refused, nothing applied: %s", e.ID, stale))
	}
	return d, nil
}

// applyWork applies admitted work.
func (a *Agent) applyWork(ctx context.Context, e *events.Event, d *events.WorkData) (err error) {
	kind, name := "apply", "apply release"
	if d.Delete {
		kind, name = "delete", "remove application"
	}
	ctx, span := a.tracer.Start(telemetry.Extract(ctx, e.TraceParent, e.TraceState), name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(telemetry.AttrCluster.String(a.opts.Cluster), telemetry.AttrApplication.String(d.Application),
			telemetry.AttrNamespace.String(d.Namespace), telemetry.AttrRelease.String(d.Release), telemetry.AttrStep.String(d.Step),
			telemetry.AttrEventID.String(e.ID)))
	start := time.Now()
	defer func() {
		result := "applied"
		switch {
		case bus.IsRetry(err):
			result = "retry"
			a.metrics.applyErrors.WithLabelValues(a.opts.Cluster, "transient").Inc()
		case err != nil:
			result = "failed"
		}
		telemetry.SetError(span, err)
		if !d.Delete {
			a.metrics.applyDuration.WithLabelValues(a.opts.Cluster).Observe(time.Since(start).Seconds())
		}
		a.metrics.work.WithLabelValues(a.opts.Cluster, kind, result).Inc()
		span.End()
	}()
	app := apply.App{Namespace: d.Namespace, Name: d.Application, UID: d.UID}
	a.setTrace(app, workTrace{release: d.Release, span: span.SpanContext()})
	log := a.log.With("app", app.String(), "release", d.Release)
	if d.Delete {
		a.mu.Lock()
		delete(a.desired, app)
		a.removed[d.UID] = true
		a.mu.Unlock()
		a.monitor.forget(app)
		if err := a.applier.Delete(ctx, app); err != nil {
			if p, refused := problem.As(err); refused {
				return a.refuse(ctx, d, "cannot remove the application: "+p.Message, err)
			}
			log.WarnContext(ctx, "remove application", "err", err)
			return bus.Retry(5*time.Second, err)
		}
		log.InfoContext(ctx, "application removed")
		err := a.report(ctx, &events.ClusterStatusData{AppRef: d.AppRef, Cluster: a.opts.Cluster, Phase: events.ClusterDeleted, ObservedAt: time.Now().UTC()})
		if err == nil {
			a.mu.Lock()
			delete(a.traces, app)
			a.mu.Unlock()
		}
		return err
	}
	objs, err := a.desiredObjects(ctx, d)
	if err != nil {
		// A snapshot this agent cannot read (too large to travel inline and
		// its NATS user may not read the object store, or one that does not
		// match its digest) fails the release here, visibly, rather than
		// blocking this cluster's other work with endless retries.
		log.WarnContext(ctx, "cannot read the release's snapshot", "err", err)
		return a.refuse(ctx, d, "cannot read the release's snapshot: "+err.Error(), err)
	}
	// Desired first: drift repair triggered by this very apply must see the new release.
	a.mu.Lock()
	a.desired[app] = d
	a.mu.Unlock()
	res, err := a.applier.Apply(ctx, app, d.Release, objs, apply.TakeOver(d.TakeOver...), apply.ReadOnly(d.ReadOnly...), apply.Mark(markOf(d)))
	if err == nil {
		a.mu.Lock()
		a.appliedMarks[app] = markOf(d)
		a.mu.Unlock()
	}
	if p, refused := problem.As(err); refused {
		log.WarnContext(ctx, "release refused", "err", err)
		return a.refuse(ctx, d, p.Message, err)
	}
	if res != nil {
		for _, o := range res.Failed() {
			if !transient(o.Err) {
				a.metrics.applyErrors.WithLabelValues(a.opts.Cluster, "refused").Inc()
			}
		}
	}
	if err == nil {
		for _, o := range res.Failed() {
			if transient(o.Err) {
				err = o.Err
				break
			}
		}
	}
	if err != nil {
		// The cluster's API server is not answering: try again, later.
		log.WarnContext(ctx, "apply failed, retrying", "err", err)
		return bus.Retry(5*time.Second, err)
	}
	for _, r := range res.Pruned {
		log.InfoContext(ctx, "pruned", "object", r.String())
	}
	for _, err := range res.PruneErrs {
		log.WarnContext(ctx, "prune", "err", err)
	}
	st := &events.ClusterStatusData{AppRef: d.AppRef, Cluster: a.opts.Cluster, Step: d.Step, Phase: events.ClusterApplied, ObservedAt: time.Now().UTC()}
	var failures []string
	for _, o := range res.Objects {
		if o.Err != nil {
			failures = append(failures, o.Err.Error())
			st.Objects = append(st.Objects, events.ObjectStatus{Group: o.Ref.Group, Version: o.Ref.Version, Kind: o.Ref.Kind, Namespace: o.Ref.Namespace, Name: o.Ref.Name, Health: events.HealthFailed, Message: o.Err.Error()})
			continue
		}
		st.Objects = append(st.Objects, apply.Health(o.Ref, o.Object))
	}
	if len(failures) > 0 {
		st.Phase, st.Message = events.ClusterFailed, strings.Join(failures, "; ")
		log.WarnContext(ctx, "release not fully applied", "failures", st.Message)
	} else {
		log.InfoContext(ctx, "release applied", "objects", len(res.Objects))
		a.setTrace(app, workTrace{release: d.Release, span: span.SpanContext(), waitingSince: time.Now()})
	}
	_, watch := a.tracer.Start(ctx, "watch objects")
	if err := a.monitor.track(ctx, app, res.Objects); err != nil {
		log.WarnContext(ctx, "watch objects", "err", err)
	}
	watch.End()
	return a.report(ctx, st)
}

// refuse fails work that retrying cannot help (err says why): the cluster
// reports the release Failed with msg, and the work is not delivered again.
func (a *Agent) refuse(ctx context.Context, d *events.WorkData, msg string, err error) error {
	if rerr := a.report(ctx, &events.ClusterStatusData{AppRef: d.AppRef, Cluster: a.opts.Cluster, Step: d.Step, Phase: events.ClusterFailed,
		Message: msg, ObservedAt: time.Now().UTC()}); rerr != nil {
		return bus.Retry(5*time.Second, rerr)
	}
	return bus.Terminate(err)
}

// desiredObjects are the objects work puts in the cluster: its snapshot's,
// moved to its target namespace when a topology policy names one.
func (a *Agent) desiredObjects(ctx context.Context, w *events.WorkData) ([]*unstructured.Unstructured, error) {
	objs, err := a.objects(ctx, w.Snapshot)
	if err != nil {
		return nil, err
	}
	if w.TargetNamespace != "" {
		for _, o := range objs {
			o.SetNamespace(w.TargetNamespace)
		}
	}
	return objs, nil
}

// objects opens a work message's snapshot (package snapshot checks it
// against its digest: the agent applies only what the release vouches for).
func (a *Agent) objects(ctx context.Context, s *events.Snapshot) ([]*unstructured.Unstructured, error) {
	var store snapshot.Reader
	if s != nil && s.ObjectStore != "" {
		// Only an agent whose NATS user may read the object store gets this far.
		st, err := bus.Snapshots(ctx, a.js)
		if err != nil {
			return nil, err
		}
		store = st
	}
	raws, err := snapshot.Open(ctx, store, s)
	if errors.Is(err, snapshot.ErrInvalid) {
		return nil, bus.Terminate(fmt.Errorf("refusing to apply it: %w", err))
	}
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(raws))
	for i, raw := range raws {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, bus.Terminate(fmt.Errorf("snapshot object %d: %w", i, err))
		}
		out = append(out, u)
	}
	return out, nil
}

// report publishes a status event, unless it says what the last one said.
func (a *Agent) report(ctx context.Context, st *events.ClusterStatusData) error {
	st.Trim() // within what the hub accepts of a cluster
	if !a.monitor.changed(st) {
		return nil
	}
	id := fmt.Sprintf("%s.%s.v%d.%d", a.opts.Cluster, st.UID, st.Revision, time.Now().UnixNano())
	e := events.New(id, events.SourceAgent(a.opts.Cluster), events.TypeClusterStatus, st.Namespace+"/"+st.Application, st)
	// A report answers the work it is about: under that work's span, else
	// (work not seen by this process yet) under its release's.
	if w, ok := a.traceOf(apply.App{Namespace: st.Namespace, Name: st.Application, UID: st.UID}); ok && w.release == st.Release && w.span.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, w.span)
	} else if !trace.SpanContextFromContext(ctx).IsValid() && st.UID != "" && st.Revision > 0 {
		tid := telemetry.ReleaseTraceID(st.UID, st.Revision)
		ctx = telemetry.RemoteParent(ctx, tid, telemetry.ReleaseSpanID(tid), true)
	}
	e.TraceParent, e.TraceState = telemetry.Inject(ctx)
	a.noteHealth(ctx, st)
	a.keepForOutbox(bus.StatusSubject(a.opts.Cluster, st.Namespace, st.Application), e)
	if _, err := bus.Publish(ctx, a.js, bus.StatusSubject(a.opts.Cluster, st.Namespace, st.Application), e); err != nil {
		a.monitor.unreport(st)
		return err
	}
	return nil
}

// transient says whether an apply error is the cluster's API server not
// answering (retry later) rather than refusing the object (report it).
func transient(err error) bool {
	if meta.IsNoMatchError(err) {
		return false // the cluster does not serve the kind: report it
	}
	if _, refused := problem.As(err); refused {
		return false // the agent refused it (not owned, reserved): report it
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return true
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err)
}
