package planner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/release"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// pass is one reconcile of one Application: what its steps read, decided
// and changed, handed from one step to the next.
type pass struct {
	key string
	app *v1beta1.Application
	// rec is the run record as loaded (nil: none yet) and rev its KV revision.
	rec *Record
	rev uint64
	// refused says why no release could be cut from what the user applied.
	refused *problem.Error
	// cut is set when this pass started a new release.
	cut bool
	// loaded is the record as it was before operate and tick, to save only a change.
	loaded []byte
	// transitions are the step events this pass publishes.
	transitions []workflow.Transition
	// fx are the spans and metrics of what the pass did, recorded once saved.
	fx effects
	// pruned are snapshots of releases no longer kept, deleted once saved.
	pruned []snapshot.Ref
}

// step is one link of the reconcile chain; done ends the pass (the step
// wrote what had to be written).
type step func(ctx context.Context, ps *pass) (done bool, err error)

// reconcile brings one Application's release and run up to date, then
// writes its status once.
func (p *Planner) reconcile(ctx context.Context, key string) error {
	unlock := p.locks.lock(key)
	defer unlock()
	ps, err := p.load(ctx, key)
	if err != nil || ps == nil {
		return err
	}
	for _, s := range []step{p.forgetReplaced, p.finalizeDeleted, p.ensureFinalizer, p.cutRelease, p.operateRequested, p.tick, p.commitPass} {
		done, err := s(ctx, ps)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
	return p.writeStatus(ctx, ps.app, computeStatus(ps.app, ps.rec, ps.refused, p.now(), p.outages(ps.rec)))
}

// load reads the Application (from the cache) and its run record; a nil
// pass means there is nothing to do.
func (p *Planner) load(ctx context.Context, key string) (*pass, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, nil
	}
	obj, err := p.apps.ByNamespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Gone for good (its finalizer was removed): forget its run.
		p.outbox.forget(ns, name)
		return nil, p.store.delete(ctx, ns, name)
	}
	if err != nil {
		return nil, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("application %s: unexpected %T in cache", key, obj)
	}
	app := &v1beta1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app); err != nil {
		return nil, fmt.Errorf("decode Application %s: %w", key, err)
	}
	rec, rev, err := p.store.load(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if err := p.flush(ctx, rec, rev); err != nil {
		return nil, err
	}
	return &pass{key: key, app: app, rec: rec, rev: rev}, nil
}

// forgetReplaced drops the run of an Application deleted and created anew
// under the same name: the new one starts over.
func (p *Planner) forgetReplaced(ctx context.Context, ps *pass) (bool, error) {
	if ps.rec == nil || ps.rec.UID == string(ps.app.UID) {
		return false, nil
	}
	var fx effects
	if !ps.rec.TraceDone && ps.rec.Run != nil && !ps.rec.Run.Finished() {
		fx = p.endRelease(ps.rec, "deleted")
	}
	if err := p.store.delete(ctx, ps.app.Namespace, ps.app.Name); err != nil {
		return false, err
	}
	p.emit(ctx, fx)
	ps.rec, ps.rev = nil, 0
	return false, nil
}

func (p *Planner) finalizeDeleted(ctx context.Context, ps *pass) (bool, error) {
	if ps.app.DeletionTimestamp == nil {
		return false, nil
	}
	return true, p.finalize(ctx, ps)
}

func (p *Planner) ensureFinalizer(ctx context.Context, ps *pass) (bool, error) {
	if slices.Contains(ps.app.Finalizers, Finalizer) {
		return false, nil
	}
	return false, p.addFinalizer(ctx, ps.app)
}

// cutRelease starts a new release when what cuts one changed (release.Key);
// what the user got wrong is kept as the pass's refusal, retried on resync.
func (p *Planner) cutRelease(ctx context.Context, ps *pass) (bool, error) {
	if ps.rec != nil && ps.rec.Key == release.Key(ps.app) {
		return false, nil
	}
	err := p.cut(ctx, ps)
	if refused, ok := problem.As(err); ok {
		ps.refused = refused
		p.log.Info("release not started", "app", ps.key, "reason", refused.Reason, "message", refused.Message)
		p.queue.AddAfter(ps.key, p.opts.Resync)
		return false, nil
	}
	return false, err
}

// cut resolves the Application and starts a new release after the pass's
// record, keeping its snapshot.
func (p *Planner) cut(ctx context.Context, ps *pass) error {
	app, prev := ps.app, ps.rec
	spec, err := release.Resolve(ctx, p.hub, app)
	if err != nil {
		return err
	}
	objects, _, err := release.Snapshot(spec.Objects)
	if err != nil {
		return err
	}
	rec := &Record{UID: string(app.UID), Key: release.Key(app), Policies: spec.Policies, TakeOver: spec.TakeOver, ReadOnly: spec.ReadOnly}
	revision := int64(1)
	if prev != nil {
		revision = prev.Run.Revision + 1
		rec.Placed, rec.Releases = prev.Placed, prev.Releases
	}
	if rec.Snapshot, err = snapshot.Put(ctx, p.snaps, app.Namespace, app.Name, revision, objects); err != nil {
		return err
	}
	ref := events.AppRef{
		Namespace: app.Namespace, Application: app.Name, UID: string(app.UID),
		Release: fmt.Sprintf("%s-v%d", app.Name, revision), Revision: revision,
		PublishVersion: app.Annotations[v1beta1.AnnotationPublishVersion],
	}
	rec.Run = workflow.NewRun(ref, spec.Steps, p.now())
	p.startTrace(rec)
	if prev != nil && prev.Run != nil && !prev.TraceDone && !prev.Run.Finished() {
		ps.fx.add(p.endRelease(prev, "superseded"))
	}
	ps.fx.started++
	rec.Releases = append(rec.Releases, ReleaseInfo{Revision: revision, PublishVersion: ref.PublishVersion, Snapshot: rec.Snapshot, Created: p.now()})
	ps.pruned = append(ps.pruned, rec.keepNewest()...)
	p.log.InfoContext(trace.ContextWithSpanContext(ctx, rec.rootContext()), "release cut", "app", ps.key, "release", ref.Release, "digest", rec.Snapshot.Digest)
	ps.rec, ps.cut = rec, true
	return nil
}

// operateRequested carries out a workflow operation a user requested on the
// Application's status (suspend, resume, terminate, restart, rollback).
func (p *Planner) operateRequested(ctx context.Context, ps *pass) (bool, error) {
	if ps.rec == nil {
		return false, nil
	}
	ps.loaded, _ = json.Marshal(ps.rec)
	if op := pendingOperation(ps.app, ps.rec); op != nil {
		ps.transitions = append(ps.transitions, p.operate(ctx, ps, op)...)
	}
	return false, nil
}

// tick lets time pass on the run: a new run starts, durations and timeouts
// are checked.
func (p *Planner) tick(_ context.Context, ps *pass) (bool, error) {
	if ps.rec == nil {
		return false, nil
	}
	ps.transitions = append(ps.transitions, ps.rec.Run.Apply(p.now(), workflow.Tick{})...)
	ps.rec.noteOutcome()
	return false, nil
}

// commitPass saves what the pass changed, and only a change: most passes
// (status echoes, resyncs) change nothing. It schedules the run's next
// deadline.
func (p *Planner) commitPass(ctx context.Context, ps *pass) (bool, error) {
	if ps.rec == nil {
		return false, nil
	}
	if after, _ := json.Marshal(ps.rec); ps.cut || len(ps.transitions) > 0 || !bytes.Equal(ps.loaded, after) {
		if _, err := p.commit(ctx, ps.rec, ps.rev, ps.transitions, ps.fx); err != nil {
			return false, err
		}
		for _, old := range ps.pruned {
			if err := snapshot.Delete(ctx, p.snaps, old); err != nil {
				p.log.Warn("prune snapshot", "app", ps.key, "err", err)
			}
		}
	}
	if d := ps.rec.Run.Deadline(); !d.IsZero() {
		p.queue.AddAfter(ps.key, time.Until(d)+10*time.Millisecond)
	}
	return false, nil
}
