// Package planner owns the planner service: it watches Applications on the
// hub, cuts releases, drives each release's workflow (package workflow),
// publishes one step event per transition, consumes the dispatcher's, the
// gate's and the clusters' reports, and writes the Application's status. Its
// run state lives in JetStream KV, written by compare-and-set.
//
// The files follow one Application through the planner: controller.go (the
// informers, which only enqueue keys, and the workers), reconcile.go (one
// pass over an Application as a chain of small steps: load, cut, operate,
// tick, commit, status), operations.go (workflow operations users request),
// reports.go (the other services' reports), finalize.go (deletion), store.go
// (the run record and its compare-and-set), status.go (the status, computed
// purely) and statuswrite.go (writing it once, keeping users' requests),
// trace.go (spans and metrics, derived from what a saved change did).
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Finalizer keeps a deleted Application until every cluster removed it.
const Finalizer = "flotilla.dev/cleanup"

// Options tune the planner.
type Options struct {
	// StreamReplicas are the replicas of the streams and buckets it
	// creates (--stream-replicas): 3 on a NATS cluster.
	StreamReplicas int
	// Workers reconciling Applications concurrently.
	Workers int
	// Resync re-reads every Application this often, so a fixed missing
	// object is noticed without an edit.
	Resync time.Duration
	// Consumer is the durable name on the report streams, shared by replicas.
	Consumer string
	// Namespace, when set, is the only hub namespace whose Applications
	// this planner runs (one planner per tenant namespace, or per test).
	Namespace string
	// Instruments record the planner's spans and metrics.
	Instruments telemetry.Instruments
}

// BindFlags binds the planner's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	bus.BindReplicasFlag(fs, &o.StreamReplicas)
	fs.IntVar(&o.Workers, "workers", 4, "applications reconciled concurrently")
	fs.DurationVar(&o.Resync, "resync", 30*time.Second, "re-read every application this often")
	fs.StringVar(&o.Consumer, "consumer", bus.ConsumerPlanner, "durable consumer name on the report streams (shared by replicas)")
	fs.StringVar(&o.Namespace, "namespace", "", "run only the Applications of this hub namespace (default: every namespace)")
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
	// afterSave and afterPublish, set only by tests, run between saving a
	// change and publishing its events, and after publishing them, as a
	// crash there would.
	afterSave, afterPublish func() error
	// outbox is which saved records' events this planner saw published.
	outbox outboxes

	// lanes read each cluster's reports.
	lanes *lanes

	tracer  trace.Tracer
	metrics *metrics
	// watched are the kinds of referenced objects once missing, watched
	// since so that creating one starts the releases waiting for it.
	watched sync.Map
	meta    metadatainformer.SharedInformerFactory
	stop    <-chan struct{}
	// factory informs on the namespaced kinds (of Options.Namespace, if
	// set), clusterFactory on the cluster-scoped ManagedClusters.
	factory        dynamicinformer.DynamicSharedInformerFactory
	clusterFactory dynamicinformer.DynamicSharedInformerFactory
}

// New builds a planner over the hub's clients and the JetStream js
// (streams are set up by Run).
func New(c *hub.Clients, js jetstream.JetStream, log *slog.Logger, opts Options) (*Planner, error) {
	if c == nil || c.Dynamic == nil || c.Mapper == nil {
		return nil, errors.New("planner: hub clients (dynamic, mapper) are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.Consumer == "" {
		opts.Consumer = bus.ConsumerPlanner
	}
	ns := opts.Namespace
	if ns == "" {
		ns = metav1.NamespaceAll
	}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.Dynamic, opts.Resync, ns, nil)
	clusterFactory := dynamicinformer.NewDynamicSharedInformerFactory(c.Dynamic, opts.Resync)
	p := &Planner{
		opts: opts, log: log, dyn: c.Dynamic, js: js, now: time.Now, factory: factory, clusterFactory: clusterFactory,
		tracer: opts.Instruments.T(), metrics: newMetrics(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "applications"}),
	}
	p.apps = factory.ForResource(v1beta1.ApplicationResource).Lister()
	p.clusters = clusterFactory.ForResource(clusterv1.ManagedClusterResource).Lister()
	p.hub = &hubReader{
		dyn:       c.Dynamic,
		mapper:    c.Mapper,
		workflows: factory.ForResource(v1alpha1.WorkflowResource).Lister(),
		policies:  factory.ForResource(v1alpha1.PolicyResource).Lister(),
		scopes:    clusterFactory.ForResource(grantv1alpha1.ScopeGrantResource).Lister(),
		sets:      clusterFactory.ForResource(clusterv1beta2.ManagedClusterSetResource).Lister(),
		bindings:  factory.ForResource(clusterv1beta2.ManagedClusterSetBindingResource).Lister(),
		clusters:  p.clusters,
		missing:   p.watchKind,
	}
	if c.Metadata != nil {
		p.meta = newMetadataFactory(c.Metadata, ns)
	}
	p.lanes = newLanes(p)
	p.metrics.deadLetters = bus.NewDeadLetters(log)
	if err := opts.Instruments.Register(p.metrics.collectors()...); err != nil {
		return nil, fmt.Errorf("planner: %w", err)
	}
	return p, nil
}

// newMetadataFactory informs on object metadata only, without resync: what
// matters is that a referenced object appears.
func newMetadataFactory(c metadata.Interface, ns string) metadatainformer.SharedInformerFactory {
	return metadatainformer.NewFilteredSharedInformerFactory(c, 0, ns, nil)
}

// Run sets up the streams, starts the informers, the report consumers and
// the workers, and blocks until ctx ends.
func (p *Planner) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	if err := bus.Setup(ctx, p.js, bus.SetupOptions{Owner: bus.OwnerPlanner, Replicas: p.opts.StreamReplicas}); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	if err := bus.AwaitStreams(ctx, p.js, p.log, bus.StreamDispatch, bus.StreamGate, bus.StreamBundles); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	kv, err := p.js.KeyValue(ctx, bus.BucketRuns)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	p.store = store{kv: kv}
	if p.snaps, err = bus.Snapshots(ctx, p.js); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	if err := p.addHandlers(); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	p.stop = ctx.Done()
	p.factory.Start(ctx.Done())
	p.clusterFactory.Start(ctx.Done())
	for _, f := range []dynamicinformer.DynamicSharedInformerFactory{p.factory, p.clusterFactory} {
		for gvr, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("planner: cache of %s did not sync", gvr.Resource)
			}
		}
	}
	stopConsumers, err := p.consumeReports(ctx)
	if err != nil {
		return err
	}
	defer stopConsumers()

	var wg sync.WaitGroup
	for range p.opts.Workers {
		wg.Go(func() {
			for p.processNext(ctx) {
			}
		})
	}
	p.log.Info("planner running", "workers", p.opts.Workers, "namespace", p.opts.Namespace)
	<-ctx.Done()
	p.queue.ShutDown()
	wg.Wait()
	return nil
}

// addHandlers has every informer enqueue the keys of the Applications its
// change may concern, and nothing more: the workers do the I/O.
func (p *Planner) addHandlers() error {
	if _, err := p.factory.ForResource(v1beta1.ApplicationResource).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: p.enqueue, UpdateFunc: func(_, obj any) { p.enqueue(obj) }, DeleteFunc: p.enqueue,
	}); err != nil {
		return err
	}
	// A Workflow, Policy or cluster set binding that appears or changes may
	// unblock an Application of its namespace.
	for _, gvr := range []schema.GroupVersionResource{v1alpha1.WorkflowResource, v1alpha1.PolicyResource, clusterv1beta2.ManagedClusterSetBindingResource} {
		if _, err := p.factory.ForResource(gvr).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: p.enqueueNamespace, UpdateFunc: func(_, obj any) { p.enqueueNamespace(obj) }, DeleteFunc: p.enqueueNamespace,
		}); err != nil {
			return err
		}
	}
	// A grant or cluster set that appears or changes may unblock any Application.
	for _, gvr := range []schema.GroupVersionResource{grantv1alpha1.ScopeGrantResource, clusterv1beta2.ManagedClusterSetResource} {
		if _, err := p.clusterFactory.ForResource(gvr).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: p.enqueueAll, UpdateFunc: func(_, obj any) { p.enqueueAll(obj) }, DeleteFunc: p.enqueueAll,
		}); err != nil {
			return err
		}
	}
	// A ManagedCluster opens its report lane; deleted, it closes it, and
	// may be the last one a deleted Application waits for.
	_, err := p.clusterFactory.ForResource(clusterv1.ManagedClusterResource).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: p.lanes.enqueue,
		UpdateFunc: func(old, obj any) {
			p.lanes.enqueue(obj)
			// A cluster cut off or back: the health of what runs there
			// is unknown, or known again.
			if availability(old) != availability(obj) {
				p.enqueueAll(obj)
			}
		},
		DeleteFunc: func(obj any) {
			// Its lane closes; an Application deleted may have waited on
			// it, and one running there now has an unknown health.
			p.lanes.enqueue(obj)
			p.enqueueAll(obj)
		},
	})
	return err
}

func (p *Planner) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		p.queue.Add(key)
	}
}

// availability is a ManagedCluster's outage, if any ("" when available).
func availability(obj any) string {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return ""
	}
	o, down := outageOf(u)
	if !down {
		return ""
	}
	return string(o.Status) + "/" + o.Reason + "/" + o.Since.String()
}

// enqueueAll enqueues every Application.
func (p *Planner) enqueueAll(any) {
	apps, _ := p.apps.List(labels.Everything())
	for _, a := range apps {
		p.enqueue(a)
	}
}

// enqueueNamespace enqueues every Application of obj's namespace.
func (p *Planner) enqueueNamespace(obj any) {
	m, err := metaOf(obj)
	if err != nil {
		return
	}
	apps, _ := p.apps.ByNamespace(m.GetNamespace()).List(labels.Everything())
	for _, a := range apps {
		p.enqueue(a)
	}
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
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: p.enqueueNamespace}); err != nil {
		p.log.Warn("watch referenced kind", "resource", gvr.String(), "err", err)
		return
	}
	p.meta.Start(p.stop)
	p.log.Info("watching a referenced kind", "resource", gvr.String())
}

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	return meta.Accessor(obj)
}

// keyLocks serialises work on one application inside this replica; across
// replicas the KV compare-and-set does. An entry lives only while someone
// holds or waits for it, so the map does not grow with every application
// ever seen.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// held is how many keys have an entry (for tests).
func (k *keyLocks) held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.locks)
}
