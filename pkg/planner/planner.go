// Package planner owns the planner service: it watches Applications on the
// hub, cuts releases, drives each release's workflow (package workflow),
// publishes one step event per transition, consumes the dispatcher's and the
// clusters' reports, and writes the Application's status. Its run state lives
// in JetStream KV, written by compare-and-set.
package planner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/release"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// Finalizer keeps a deleted Application until every cluster removed it.
const Finalizer = "flotilla.dev/cleanup"

// Options tune the planner.
type Options struct {
	// Workers reconciling Applications concurrently.
	Workers int
	// Resync re-reads every Application this often, so a fixed missing
	// object is noticed without an edit.
	Resync time.Duration
	// Consumer is the durable name on the status stream, shared by replicas.
	Consumer string
	// Instruments record the planner's spans and metrics.
	Instruments telemetry.Instruments
}

// BindFlags binds the planner's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Workers, "workers", 4, "applications reconciled concurrently")
	fs.DurationVar(&o.Resync, "resync", 30*time.Second, "re-read every application this often")
	fs.StringVar(&o.Consumer, "consumer", bus.ConsumerPlanner, "durable consumer name on the status stream (shared by replicas)")
}

// Hooks let tests stop a planner at a precise point, as a crash would.
type Hooks struct {
	// AfterPublish runs after a transition's events are published and
	// before the run state is saved; an error abandons the save.
	AfterPublish func() error
}

// Planner is one planner replica.
type Planner struct {
	opts  Options
	log   *slog.Logger
	dyn   dynamic.Interface
	js    jetstream.JetStream
	store store
	snaps jetstream.ObjectStore
	hub   *hubReader
	apps  cache.GenericLister
	// clusters are the hub's ManagedClusters: one deleted holds no deletion up.
	clusters cache.GenericLister
	queue    workqueue.TypedRateLimitingInterface[string]
	locks    keyLocks
	now      func() time.Time
	hooks    Hooks

	tracer  trace.Tracer
	metrics *metrics
	// watched are the kinds of referenced objects once missing, watched
	// since so that creating one starts the releases waiting for it.
	watched sync.Map
	meta    metadatainformer.SharedInformerFactory
	stop    <-chan struct{}
	factory dynamicinformer.DynamicSharedInformerFactory
}

// New builds a planner for the hub at cfg and the JetStream js (streams are
// set up by Run).
func New(cfg *rest.Config, js jetstream.JetStream, log *slog.Logger, opts Options, hooks Hooks) (*Planner, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.Consumer == "" {
		opts.Consumer = bus.ConsumerPlanner
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("planner: hub client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("planner: hub discovery: %w", err)
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, opts.Resync)
	p := &Planner{
		opts: opts, log: log, dyn: dyn, js: js, now: time.Now, hooks: hooks, factory: factory,
		tracer: opts.Instruments.T(), metrics: newMetrics(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "applications"}),
	}
	p.hub = &hubReader{
		dyn:       dyn,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)),
		workflows: factory.ForResource(v1alpha1.WorkflowResource).Lister(),
		policies:  factory.ForResource(v1alpha1.PolicyResource).Lister(),
	}
	p.apps = factory.ForResource(v1beta1.ApplicationResource).Lister()
	p.hub.missing = p.watchKind
	if mc, err := metadata.NewForConfig(cfg); err == nil {
		// Object metadata only, no resync: what matters is that one appears.
		p.meta = metadatainformer.NewSharedInformerFactory(mc, 0)
	}
	p.clusters = factory.ForResource(clusterv1.ManagedClusterResource).Lister()
	if err := opts.Instruments.Register(p.metrics.collectors()...); err != nil {
		return nil, fmt.Errorf("planner: %w", err)
	}
	return p, nil
}

// Run sets up the streams, starts the informers, the status consumer and
// the workers, and blocks until ctx ends.
func (p *Planner) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	if err := bus.Setup(ctx, p.js, bus.SetupOptions{}); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	kv, err := p.js.KeyValue(ctx, bus.BucketRuns)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	p.store = store{kv: kv}
	if p.snaps, err = p.js.ObjectStore(ctx, bus.ObjectSnapshots); err != nil {
		return fmt.Errorf("planner: %w", err)
	}

	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			p.queue.Add(key)
		}
	}
	if _, err := p.factory.ForResource(v1beta1.ApplicationResource).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	// A Workflow or Policy that appears or changes may unblock an
	// Application of its namespace.
	byNamespace := func(obj any) {
		if m, err := metaOf(obj); err == nil {
			apps, _ := p.apps.ByNamespace(m.GetNamespace()).List(everything)
			for _, a := range apps {
				enqueue(a)
			}
		}
	}
	for _, inf := range []cache.SharedIndexInformer{
		p.factory.ForResource(v1alpha1.WorkflowResource).Informer(),
		p.factory.ForResource(v1alpha1.PolicyResource).Informer(),
	} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: byNamespace, UpdateFunc: func(_, obj any) { byNamespace(obj) }, DeleteFunc: byNamespace,
		}); err != nil {
			return fmt.Errorf("planner: %w", err)
		}
	}
	// A ManagedCluster deleted may be the last one a deleted Application waits for.
	if _, err := p.factory.ForResource(clusterv1.ManagedClusterResource).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(any) {
			apps, _ := p.apps.List(everything)
			for _, a := range apps {
				if m, err := metaOf(a); err == nil && m.GetDeletionTimestamp() != nil {
					enqueue(a)
				}
			}
		},
	}); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	p.stop = ctx.Done()
	p.factory.Start(ctx.Done())
	for gvr, ok := range p.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("planner: cache of %s did not sync", gvr.Resource)
		}
	}

	cons, err := p.js.CreateOrUpdateConsumer(ctx, bus.StreamStatus, jetstream.ConsumerConfig{
		Durable:       p.opts.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 256,
	})
	if err != nil {
		return fmt.Errorf("planner: status consumer: %w", err)
	}
	p.metrics.consumers.Watch(cons)
	cc, err := bus.Consume(ctx, cons, p.log, p.handleReport)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	defer cc.Stop()
	// The gate's decisions on waiting steps.
	decisions, err := p.js.CreateOrUpdateConsumer(ctx, bus.StreamApprovals, jetstream.ConsumerConfig{
		Durable:       p.opts.Consumer,
		FilterSubject: bus.GateDecisionsFilter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("planner: decisions consumer: %w", err)
	}
	p.metrics.consumers.Watch(decisions)
	dc, err := bus.Consume(ctx, decisions, p.log, p.handleReport)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	defer dc.Stop()

	var wg sync.WaitGroup
	for range p.opts.Workers {
		wg.Go(func() {
			for p.processNext(ctx) {
			}
		})
	}
	p.log.Info("planner running", "workers", p.opts.Workers)
	<-ctx.Done()
	p.queue.ShutDown()
	wg.Wait()
	return nil
}

func (p *Planner) processNext(ctx context.Context) bool {
	key, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(key)
	if err := p.reconcile(ctx, key); err != nil {
		if errors.Is(err, errConflict) {
			// Another replica (or this one's report handler) saved first: that
			// is progress, not failure. Re-read soon, without backing off.
			p.queue.Forget(key)
			p.queue.AddAfter(key, 20*time.Millisecond)
			return true
		}
		if ctx.Err() == nil {
			p.log.Warn("reconcile failed, retrying", "app", key, "err", err)
		}
		p.queue.AddRateLimited(key)
		return true
	}
	p.queue.Forget(key)
	return true
}

// reconcile brings one Application's release and run up to date, then
// writes its status once.
func (p *Planner) reconcile(ctx context.Context, key string) error {
	unlock := p.locks.lock(key)
	defer unlock()
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	obj, err := p.apps.ByNamespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Gone for good (its finalizer was removed): forget its run.
		return p.store.delete(ctx, ns, name)
	}
	if err != nil {
		return err
	}
	app := &v1beta1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, app); err != nil {
		return fmt.Errorf("decode Application %s: %w", key, err)
	}
	rec, rev, err := p.store.load(ctx, ns, name)
	if err != nil {
		return err
	}
	if rec != nil && rec.UID != string(app.UID) {
		// A re-created Application starts over.
		if !rec.TraceDone && rec.Run != nil && !rec.Run.Finished() {
			p.endRelease(rec, "deleted")
		}
		if err := p.store.delete(ctx, ns, name); err != nil {
			return err
		}
		rec.saved(ctx)
		rec, rev = nil, 0
	}

	if app.DeletionTimestamp != nil {
		return p.finalize(ctx, app, rec, rev)
	}
	if !slices.Contains(app.Finalizers, Finalizer) {
		if err := p.addFinalizer(ctx, app); err != nil {
			return err
		}
	}

	var refused *problem.Error
	cut := false
	if rec == nil || rec.Key != release.Key(app) {
		next, err := p.cut(ctx, app, rec)
		if pr, ok := problem.As(err); ok {
			refused = pr
			p.log.Info("release not started", "app", key, "reason", pr.Reason, "message", pr.Message)
			p.queue.AddAfter(key, p.opts.Resync)
		} else if err != nil {
			return err
		} else {
			rec, cut = next, true
		}
	}
	if rec != nil {
		before, _ := json.Marshal(rec)
		var transitions []workflow.Transition
		if op := pendingOperation(app, rec); op != nil {
			transitions = p.operate(ctx, app, rec, op)
		}
		transitions = append(transitions, rec.Run.Apply(p.now(), workflow.Tick{})...)
		rec.noteOutcome()
		// Save only a change: most reconciles (status echoes, resyncs) change nothing.
		if after, _ := json.Marshal(rec); cut || len(transitions) > 0 || !bytes.Equal(before, after) {
			if _, err := p.commit(ctx, rec, rev, transitions); err != nil {
				return err
			}
		}
		if d := rec.Run.Deadline(); !d.IsZero() {
			p.queue.AddAfter(key, time.Until(d)+10*time.Millisecond)
		}
	}
	return p.writeStatus(ctx, app, computeStatus(app, rec, refused))
}

// cut resolves the Application and starts a new release after rec's.
func (p *Planner) cut(ctx context.Context, app *v1beta1.Application, prev *Record) (*Record, error) {
	spec, err := release.Resolve(ctx, p.hub, app)
	if err != nil {
		return nil, err
	}
	objects, digest, err := release.Snapshot(spec.Objects)
	if err != nil {
		return nil, err
	}
	rec := &Record{UID: string(app.UID), Key: release.Key(app), Policies: spec.Policies}
	revision := int64(1)
	if prev != nil {
		revision = prev.Run.Revision + 1
		rec.Placed, rec.Releases = prev.Placed, prev.Releases
	}
	if rec.Snapshot, err = snapshot.Put(ctx, p.snaps, app.Namespace, app.Name, revision, objects); err != nil {
		return nil, err
	}
	ref := events.AppRef{
		Namespace: app.Namespace, Application: app.Name, UID: string(app.UID),
		Release: fmt.Sprintf("%s-v%d", app.Name, revision), Revision: revision,
		PublishVersion: app.Annotations[v1beta1.AnnotationPublishVersion],
	}
	rec.Run = workflow.NewRun(ref, spec.Steps, p.now())
	p.startTrace(rec)
	if prev != nil && prev.Run != nil && !prev.TraceDone && !prev.Run.Finished() {
		p.endRelease(prev, "superseded")
		rec.afterSave = append(rec.afterSave, prev.afterSave...)
	}
	rec.afterSave = append(rec.afterSave, func(context.Context) { p.metrics.releasesStarted.Inc() })
	rec.Releases = append(rec.Releases, ReleaseInfo{Revision: revision, PublishVersion: ref.PublishVersion, Snapshot: rec.Snapshot, Created: p.now()})
	for len(rec.Releases) > keepReleases {
		old := rec.Releases[0]
		rec.Releases = rec.Releases[1:]
		if err := snapshot.Delete(ctx, p.snaps, old.Snapshot); err != nil {
			p.log.Warn("prune snapshot", "err", err)
		}
	}
	p.log.InfoContext(trace.ContextWithSpanContext(ctx, rec.rootContext()), "release cut", "app", app.Namespace+"/"+app.Name, "release", ref.Release, "digest", digest)
	return rec, nil
}

// commit publishes the events of transitions, then saves rec by
// compare-and-set at rev. Event IDs are deterministic: a planner that
// crashed after publishing republishes duplicates that JetStream drops, and
// of two planners racing, one saves and the other reloads.
func (p *Planner) commit(ctx context.Context, rec *Record, rev uint64, transitions []workflow.Transition) (uint64, error) {
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
	if p.hooks.AfterPublish != nil {
		if err := p.hooks.AfterPublish(); err != nil {
			return rev, err
		}
	}
	p.traceTransitions(rec, transitions)
	newRev, err := p.store.save(ctx, rec.Run.Namespace, rec.Run.Application, rec, rev)
	if err != nil {
		return rev, err
	}
	rec.saved(ctx)
	return newRev, nil
}

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
		d.Snapshot = snap
	}
	id := events.StepEventID(rec.Run.AppRef, s.Name, t.Type)
	e := events.New(id, events.SourcePlanner, t.Type, rec.Run.Namespace+"/"+rec.Run.Application, d)
	e.TraceParent = stepTraceParent(rec, t.Index)
	return e, nil
}

// handleReport feeds a dispatcher or cluster report into its application's
// run, in a span under the one that sent it.
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

func (p *Planner) report(ctx context.Context, e *events.Event) error {
	var ref events.AppRef
	var in workflow.Input
	switch d := e.Data.(type) {
	case *events.StepDispatchedData:
		ref, in = d.AppRef, workflow.Dispatched{Step: d.Step, Clusters: d.Clusters, Reason: d.Reason, Error: d.Error}
	case *events.ClusterStatusData:
		// A cluster speaks only on its own subjects (which its NATS user
		// alone may publish to).
		if want := bus.StatusSubject(d.Cluster, d.Namespace, d.Application); e.Topic != want {
			return bus.Terminate(fmt.Errorf("report for cluster %s arrived on %s, not %s", d.Cluster, e.Topic, want))
		}
		ref, in = d.AppRef, workflow.ClusterReport{Cluster: d.Cluster, Step: d.Step, Phase: d.Phase, Healthy: d.Healthy(), Message: reportMessage(d), ObservedAt: d.ObservedAt}
	case *events.StepDecisionData:
		dec := workflow.Decision{Step: d.Step, Approve: e.Type == events.TypeStepApproved, Reason: d.Reason, Approvals: d.Approvals}
		if n := len(d.Approvals); n > 0 {
			dec.By, dec.Reason = d.Approvals[n-1].Approver, d.Approvals[n-1].Reason
		}
		ref, in = d.AppRef, dec
	case *events.ClusterDriftData:
		p.log.InfoContext(ctx, "drift repaired", "app", d.Namespace+"/"+d.Application, "cluster", d.Cluster, "object", d.Object.Kind+" "+d.Object.Name, "change", d.Change)
		return nil
	default:
		return bus.Terminate(fmt.Errorf("planner does not handle %s", e.Type))
	}
	key := ref.Namespace + "/" + ref.Application
	unlock := p.locks.lock(key)
	defer unlock()
	rec, rev, err := p.store.load(ctx, ref.Namespace, ref.Application)
	if err != nil {
		return err
	}
	if rec == nil || rec.UID != ref.UID || rec.Run.Revision < ref.Revision {
		// Either the report is about an application that is gone (drop it),
		// or it overtook the save of the release it reports on (retry).
		if p.appExists(ref) {
			return bus.Retry(200*time.Millisecond, fmt.Errorf("no saved run yet for %s", ref.Release))
		}
		return nil
	}
	if rep, ok := in.(workflow.ClusterReport); ok && rep.Phase == events.ClusterDeleted {
		if !slices.Contains(rec.Deleted, rep.Cluster) {
			rec.Deleted = append(rec.Deleted, rep.Cluster)
		}
		in = nil
	}
	var transitions []workflow.Transition
	if d, ok := in.(workflow.Dispatched); ok {
		// Even an older release's clusters hold objects to remove on deletion.
		rec.place(d.Clusters)
	}
	if _, ok := in.(workflow.Decision); ok && ref.Attempt != rec.Run.Attempt {
		return nil // a decision on a run since restarted
	}
	if in != nil {
		if ref.Revision != rec.Run.Revision {
			if _, ok := in.(workflow.Dispatched); !ok {
				return nil // about an older release
			}
			_, err := p.commit(ctx, rec, rev, nil) // keep what was placed
			if errors.Is(err, errConflict) {
				return bus.Retry(50*time.Millisecond, err)
			}
			return err
		}
		transitions = rec.Run.Apply(p.now(), in)
		rec.noteOutcome()
	}
	if _, err := p.commit(ctx, rec, rev, transitions); err != nil {
		if errors.Is(err, errConflict) {
			return bus.Retry(50*time.Millisecond, err)
		}
		return err
	}
	p.queue.Add(key) // status is written by reconcile only
	return nil
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

// finalize removes a deleted Application from its clusters, then lets it go.
func (p *Planner) finalize(ctx context.Context, app *v1beta1.Application, rec *Record, rev uint64) error {
	if !slices.Contains(app.Finalizers, Finalizer) {
		return nil
	}
	if rec != nil && rec.dispatchInFlight() {
		// A deploy step started and the dispatcher has not said where it
		// went: letting go now could leave its objects behind.
		p.queue.AddAfter(app.Namespace+"/"+app.Name, time.Second)
		return p.writeStatus(ctx, app, computeStatus(app, rec, nil))
	}
	if rec != nil && len(rec.Placed) > 0 && !rec.deletedEverywhere(p.clusterGone) {
		if !rec.Deleting {
			id := rec.UID + ".deleted"
			e := events.New(id, events.SourcePlanner, events.TypeApplicationDeleted, app.Namespace+"/"+app.Name,
				&events.ApplicationDeletedData{Namespace: app.Namespace, Application: app.Name, UID: rec.UID})
			e.TraceParent = telemetry.TraceParent(rec.rootContext())
			if _, err := bus.Publish(ctx, p.js, bus.StepSubject(app.Namespace, app.Name), e); err != nil {
				return err
			}
			rec.Deleting = true
			if !rec.TraceDone && rec.Run != nil && !rec.Run.Finished() {
				rec.TraceDone = true
				p.endRelease(rec, "deleted")
			}
			if _, err := p.store.save(ctx, app.Namespace, app.Name, rec, rev); err != nil {
				return err
			}
			rec.saved(ctx)
			p.log.Info("application deleted, removing from clusters", "app", app.Namespace+"/"+app.Name, "clusters", rec.Placed)
		}
		return p.writeStatus(ctx, app, computeStatus(app, rec, nil))
	}
	if err := p.removeFinalizer(ctx, app); err != nil {
		return err
	}
	p.log.Info("application removed from every cluster", "app", app.Namespace+"/"+app.Name)
	return p.store.delete(ctx, app.Namespace, app.Name)
}

// watchKind watches the hub's objects of gvr (once, metadata only): one
// created re-reads the Applications of its namespace, so a release blocked
// on a missing object starts when it appears, not on the next resync.
func (p *Planner) watchKind(gvr schema.GroupVersionResource) {
	if p.stop == nil || p.meta == nil {
		return
	}
	if _, loaded := p.watched.LoadOrStore(gvr, true); loaded {
		return
	}
	inf := p.meta.ForResource(gvr).Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		m, err := metaOf(obj)
		if err != nil {
			return
		}
		apps, _ := p.apps.ByNamespace(m.GetNamespace()).List(everything)
		for _, a := range apps {
			if key, err := cache.MetaNamespaceKeyFunc(a); err == nil {
				p.queue.Add(key)
			}
		}
	}}); err != nil {
		p.log.Warn("watch referenced kind", "resource", gvr.String(), "err", err)
		return
	}
	p.meta.Start(p.stop)
	p.log.Info("watching a referenced kind", "resource", gvr.String())
}

// clusterGone reports whether the hub no longer has the ManagedCluster
// (its cache is synced before any reconcile).
func (p *Planner) clusterGone(name string) bool {
	if _, err := p.clusters.Get(name); !apierrors.IsNotFound(err) {
		return false
	}
	// Confirmed on the hub itself: the cache may lag a re-registration.
	_, err := p.dyn.Resource(clusterv1.ManagedClusterResource).Get(context.Background(), name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

func (p *Planner) appClient(ns string) dynamic.ResourceInterface {
	return p.dyn.Resource(v1beta1.ApplicationResource).Namespace(ns)
}

func (p *Planner) addFinalizer(ctx context.Context, app *v1beta1.Application) error {
	return p.updateFinalizers(ctx, app, func(f []string) []string {
		if slices.Contains(f, Finalizer) {
			return f
		}
		return append(f, Finalizer)
	})
}

func (p *Planner) removeFinalizer(ctx context.Context, app *v1beta1.Application) error {
	return p.updateFinalizers(ctx, app, func(f []string) []string {
		return slices.DeleteFunc(f, func(s string) bool { return s == Finalizer })
	})
}

func (p *Planner) updateFinalizers(ctx context.Context, app *v1beta1.Application, change func([]string) []string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := p.appClient(app.Namespace).Get(ctx, app.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		before := u.GetFinalizers()
		after := change(slices.Clone(before))
		if slices.Equal(before, after) {
			return nil
		}
		u.SetFinalizers(after)
		_, err = p.appClient(app.Namespace).Update(ctx, u, metav1.UpdateOptions{})
		return err
	})
}

// writeStatus writes st if it differs from what the hub has, retrying on
// conflict with a fresh read.
func (p *Planner) writeStatus(ctx context.Context, app *v1beta1.Application, st v1beta1.AppStatus) error {
	if equality.Semantic.DeepEqual(app.Status, st) {
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := p.appClient(app.Namespace).Get(ctx, app.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if u.GetUID() != app.UID {
			return nil
		}
		fresh := &v1beta1.Application{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, fresh); err != nil {
			return err
		}
		// An operation the CLI wrote after our read is not ours to erase:
		// keep it, and carry it out on the next pass.
		if fw := fresh.Status.Workflow; fw != nil && fw.Operation != nil && st.Workflow != nil &&
			(st.Workflow.LastOperation == nil || st.Workflow.LastOperation.ID != fw.Operation.ID) {
			st.Workflow.Operation = fw.Operation.DeepCopy()
			p.queue.Add(app.Namespace + "/" + app.Name)
		}
		// A resume request is its writer's claim (admission checks the
		// writer is who it names): the planner keeps the one on the hub
		// now, or removes it, and never writes one of its own.
		if st.Workflow != nil && st.Workflow.Resume != nil {
			st.Workflow.Resume = nil
			if fw := fresh.Status.Workflow; fw != nil && fw.Resume != nil {
				st.Workflow.Resume = fw.Resume.DeepCopy()
			}
		}
		if equality.Semantic.DeepEqual(fresh.Status, st) {
			return nil
		}
		stObj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			return err
		}
		// Requests kept are kept byte for byte as their writers wrote them:
		// a round trip through the Go type (times, empty lists) would read
		// as a new claim to the hub's admission policy.
		for _, field := range []string{"resume", "operation"} {
			if _, kept, _ := unstructured.NestedFieldNoCopy(stObj, "workflow", field); !kept {
				continue
			}
			raw, found, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "workflow", field)
			if !found {
				// Not on the hub (any more): the planner writes none of its own.
				unstructured.RemoveNestedField(stObj, "workflow", field)
				continue
			}
			if err := unstructured.SetNestedField(stObj, raw, "workflow", field); err != nil {
				return err
			}
		}
		u.Object["status"] = stObj
		_, err = p.appClient(app.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write status of Application %s/%s: %w", app.Namespace, app.Name, err)
	}
	return nil
}

var everything = labels.Everything()

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	return meta.Accessor(obj)
}

// keyLocks serialises work on one application inside this replica; across
// replicas the KV compare-and-set does.
type keyLocks struct{ m sync.Map }

func (k *keyLocks) lock(key string) func() {
	mu, _ := k.m.LoadOrStore(key, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}
