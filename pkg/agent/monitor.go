package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// monitor watches what the agent applied (one informer per resource, on
// Flotilla's label only), repairs drift, and re-assesses an application's
// health whenever one of its objects changes. Its informers' handlers only
// put items on a rate-limited queue; workers do the I/O (re-apply, read the
// work stream, report) and retry what failed with backoff, so a transient
// failure is tried again and a slow call holds up no informer.
type monitor struct {
	a       *Agent
	factory dynamicinformer.DynamicSharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[item]

	mu        sync.Mutex
	ctx       context.Context
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
	tracked   map[apply.App][]apply.Ref
	// readOnly are the objects each application only reads: not Flotilla's
	// (no informer sees them), read afresh on each assessment.
	readOnly map[apply.App][]apply.Ref
	last     map[apply.App]string // fingerprint of the last status reported
	// unsent are drift reports whose publish failed, sent on their item's retry.
	unsent map[item]*events.Event
}

// item is one job of the monitor's workers: assess an application's health
// or, when object is set, repair that object of it (and then assess):
// changed, or deleted.
type item struct {
	app     apply.App
	object  apply.Ref
	deleted bool
}

func (it item) job() string {
	switch {
	case it.object == (apply.Ref{}):
		return "assess health"
	case it.deleted:
		return "repair deleted " + it.object.String()
	}
	return "repair " + it.object.String()
}

// monitorWorkers repair and assess in parallel: one slow repair does not
// hold up every other application's.
const monitorWorkers = 2

func newMonitor(a *Agent) *monitor {
	return &monitor{
		a: a,
		factory: dynamicinformer.NewFilteredDynamicSharedInformerFactory(a.dyn, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
			o.LabelSelector = apply.LabelManagedBy + "=" + apply.ManagedByValue
		}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[item](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[item]{Name: "monitor"}),
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		tracked:   map[apply.App][]apply.Ref{},
		readOnly:  map[apply.App][]apply.Ref{},
		last:      map[apply.App]string{},
		unsent:    map[item]*events.Event{},
	}
}

// start sets the monitor's workers going, until ctx ends. Informers
// started from then on live as long as ctx.
func (m *monitor) start(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	// Informers registered before (a bundle applied while the agent still
	// asks to join) start now: else they never would, and what they watch
	// would never be repaired.
	m.factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		m.queue.ShutDown()
	}()
	for range monitorWorkers {
		go func() {
			for m.next(ctx) {
			}
		}()
	}
}

// next does one item of the queue; false once the queue is shut down.
func (m *monitor) next(ctx context.Context) bool {
	it, quit := m.queue.Get()
	if quit {
		return false
	}
	defer m.queue.Done(it)
	err := m.do(ctx, it)
	switch {
	case err == nil || ctx.Err() != nil:
		m.queue.Forget(it)
	case !retriable(err):
		m.a.log.Warn(it.job()+" failed", "app", it.app.String(), "err", err)
		m.queue.Forget(it)
	default:
		m.a.log.Warn(it.job()+" failed, retrying", "app", it.app.String(), "err", err)
		m.queue.AddRateLimited(it)
	}
	return true
}

func (m *monitor) do(ctx context.Context, it item) error {
	if it.object == (apply.Ref{}) {
		return m.assess(ctx, it.app)
	}
	err := m.repair(ctx, it)
	// Health after the repair, whatever came of it.
	m.queue.Add(item{app: it.app})
	return err
}

// retriable says whether a failed item may succeed later: not when the
// release's snapshot is invalid or the API server refuses the object.
func retriable(err error) bool {
	return !errors.Is(err, snapshot.ErrInvalid) && transient(err)
}

// adopt starts watching every application the cluster's inventories record.
func (m *monitor) adopt(ctx context.Context) error {
	invs, err := m.a.applier.Inventories(ctx)
	for app, refs := range invs {
		err = errors.Join(err, m.watch(ctx, app, refs), m.adoptReadOnly(ctx, app))
	}
	return err
}

// adoptReadOnly finds again, after a restart, the objects app's newest
// work only reads (no inventory records them).
func (m *monitor) adoptReadOnly(ctx context.Context, app apply.App) error {
	work, err := m.a.work(ctx, app)
	if err != nil || work == nil || work.Delete || len(work.ReadOnly) == 0 {
		return err
	}
	objs, err := m.a.desiredObjects(ctx, work)
	if err != nil {
		return fmt.Errorf("read-only objects of %s: %w", app, err)
	}
	var read []apply.Ref
	for _, o := range objs {
		if !apply.Selects(work.ReadOnly, apply.Ref{Kind: o.GetKind()}) {
			continue
		}
		if ref, err := m.a.applier.Locate(app, o); err == nil {
			read = append(read, ref)
		}
	}
	m.mu.Lock()
	m.readOnly[app] = read
	m.mu.Unlock()
	m.queue.Add(item{app: app})
	return nil
}

// track records what an apply put in the cluster.
func (m *monitor) track(ctx context.Context, app apply.App, outcomes []apply.Outcome) error {
	var refs, read []apply.Ref
	for _, o := range outcomes {
		switch {
		case o.Err != nil:
		case o.ReadOnly:
			read = append(read, o.Ref)
		default:
			refs = append(refs, o.Ref)
		}
	}
	m.mu.Lock()
	if len(read) > 0 {
		m.readOnly[app] = read
	} else {
		delete(m.readOnly, app)
	}
	m.mu.Unlock()
	if len(read) > 0 {
		m.queue.AddAfter(item{app: app}, readOnlyPoll(nil))
	}
	return m.watch(ctx, app, refs)
}

// readOnlyPoll is how soon read-only objects are read again, given their
// last health: soon while one is not yet Current (a step may be waiting
// on it), else now and then.
func readOnlyPoll(health []events.ObjectStatus) time.Duration {
	for _, h := range health {
		if h.Health != events.HealthCurrent {
			return 2 * time.Second
		}
	}
	if health == nil {
		return 2 * time.Second
	}
	return 30 * time.Second
}

func (m *monitor) watch(ctx context.Context, app apply.App, refs []apply.Ref) error {
	m.mu.Lock()
	m.tracked[app] = refs
	runCtx := m.ctx
	var started []cache.SharedIndexInformer
	var errs []error
	for _, r := range refs {
		gvr := r.GVR()
		if _, ok := m.informers[gvr]; ok {
			continue
		}
		inf := m.factory.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(m.handlers(gvr)); err != nil {
			errs = append(errs, fmt.Errorf("watch %s: %w", gvr.Resource, err))
			continue
		}
		m.informers[gvr] = inf
		started = append(started, inf)
	}
	m.mu.Unlock()
	if runCtx != nil && len(started) > 0 {
		m.factory.Start(runCtx.Done())
		for _, inf := range started {
			if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
				errs = append(errs, fmt.Errorf("watch objects of %s: %w", app, ctx.Err()))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// handlers of the informer of gvr: they only enqueue.
func (m *monitor) handlers(gvr schema.GroupVersionResource) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.enqueue(gvr, nil, obj, false) },
		UpdateFunc: func(old, obj any) { m.enqueue(gvr, old, obj, false) },
		DeleteFunc: func(obj any) { m.enqueue(gvr, nil, obj, true) },
	}
}

// enqueue puts on the queue what an informer event calls for: a repair of
// the object when it was deleted or someone changed it behind Flotilla's
// back, else a fresh assessment of its application's health.
func (m *monitor) enqueue(gvr schema.GroupVersionResource, old, obj any, deleted bool) {
	app, u, ok := m.appOf(obj)
	if !ok {
		return
	}
	if deleted || drifted(old, u) {
		m.queue.Add(item{app: app, deleted: deleted, object: apply.Ref{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource,
			Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}})
		return
	}
	m.queue.Add(item{app: app})
}

// drifted says whether an update changed an object's spec: the generation
// moved, or, for kinds without one (ConfigMaps, Secrets, ...), the content
// (their resourceVersion moves only then). Whether Flotilla's own apply
// made the change, the repair finds out.
func drifted(old any, u *unstructured.Unstructured) bool {
	o, _ := old.(*unstructured.Unstructured)
	return o != nil && (o.GetGeneration() != u.GetGeneration() || u.GetGeneration() == 0 && o.GetResourceVersion() != u.GetResourceVersion())
}

func (m *monitor) forget(app apply.App) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tracked, app)
	delete(m.readOnly, app)
	delete(m.last, app)
}

// appOf finds the tracked application (with its UID) an object of the
// informers belongs to, by its labels.
func (m *monitor) appOf(obj any) (apply.App, *unstructured.Unstructured, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return apply.App{}, nil, false
	}
	l := u.GetLabels()
	ns, name := l[apply.LabelAppNS], l[apply.LabelApplication]
	if name == "" {
		return apply.App{}, nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for t := range m.tracked {
		if apply.LabelValue(t.Namespace) == ns && apply.LabelValue(t.Name) == name {
			return t, u, true
		}
	}
	return apply.App{}, nil, false
}

// cached is the object a reference names as the informers last saw it (nil: not there).
func (m *monitor) cached(r apply.Ref) *unstructured.Unstructured {
	m.mu.Lock()
	inf := m.informers[r.GVR()]
	m.mu.Unlock()
	if inf == nil {
		return nil
	}
	key := r.Name
	if r.Namespace != "" {
		key = r.Namespace + "/" + r.Name
	}
	item, exists, err := inf.GetStore().GetByKey(key)
	if err != nil || !exists {
		return nil
	}
	u, _ := item.(*unstructured.Unstructured)
	return u
}

// assess computes an application's health from the informer caches and
// reports it when it changed.
func (m *monitor) assess(ctx context.Context, app apply.App) error {
	m.mu.Lock()
	refs, ok := m.tracked[app]
	m.mu.Unlock()
	if !ok {
		return nil
	}
	work, err := m.a.work(ctx, app)
	if err != nil || work == nil || work.Delete {
		return err
	}
	// Health is reported for the release the cluster has: never for
	// newer work not applied yet (after a restart, the newest work in the
	// stream; during an apply, the work being applied), whose step would
	// otherwise succeed on the previous release's objects.
	if has, err := m.a.appliedMark(ctx, app); err != nil || has != markOf(work) {
		return err
	}
	st := &events.ClusterStatusData{AppRef: work.AppRef, Cluster: m.a.opts.Cluster, Step: work.Step, Phase: events.ClusterApplied, ObservedAt: time.Now().UTC()}
	for _, r := range refs {
		st.Objects = append(st.Objects, apply.Health(r, m.cached(r)))
	}
	m.mu.Lock()
	read := m.readOnly[app]
	m.mu.Unlock()
	var readHealth []events.ObjectStatus
	for _, r := range read {
		live, err := m.a.applier.ReadAs(ctx, r)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("read %s: %w", r, err)
		}
		readHealth = append(readHealth, apply.Health(r, live))
	}
	st.Objects = append(st.Objects, readHealth...)
	if len(read) > 0 {
		m.queue.AddAfter(item{app: app}, readOnlyPoll(readHealth))
	}
	return m.a.report(ctx, st)
}

// changed records st as reported and says whether it differs from the last
// report of its application (the observation time aside).
func (m *monitor) changed(st *events.ClusterStatusData) bool {
	c := *st
	c.ObservedAt = time.Time{}
	data, _ := json.Marshal(c)
	app := apply.App{Namespace: st.Namespace, Name: st.Application, UID: st.UID}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last[app] == string(data) {
		return false
	}
	m.last[app] = string(data)
	return true
}

func (m *monitor) unreport(st *events.ClusterStatusData) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.last, apply.App{Namespace: st.Namespace, Name: st.Application, UID: st.UID})
}

// appliedMark is the mark of the work the application's last apply
// recorded: from memory, else (after a restart) from its inventory.
func (a *Agent) appliedMark(ctx context.Context, app apply.App) (string, error) {
	a.mu.Lock()
	mark, ok := a.appliedMarks[app]
	a.mu.Unlock()
	if ok {
		return mark, nil
	}
	mark, _, err := a.applier.MarkOf(ctx, app)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	if _, set := a.appliedMarks[app]; !set {
		a.appliedMarks[app] = mark
	}
	mark = a.appliedMarks[app]
	a.mu.Unlock()
	return mark, nil
}

// work is the newest work for app: from memory, else (after a restart) the
// last message of its subject on the work stream; nil when there is none.
func (a *Agent) work(ctx context.Context, app apply.App) (*events.WorkData, error) {
	a.mu.Lock()
	w := a.desired[app]
	a.mu.Unlock()
	if w != nil {
		return w, nil
	}
	subject := bus.WorkSubject(a.opts.Cluster, app.Namespace, app.Name)
	raw, err := bus.LastBySubject(ctx, a.nc, bus.ClusterAPI, bus.StreamWork, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// No work for this cluster (an inventory another agent of the same
		// cluster wrote, say): nothing to assess or repair.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("newest work of %s: %w", app, err)
	}
	if raw.Subject != subject {
		return nil, fmt.Errorf("newest work of %s: the server answered with %s", app, raw.Subject)
	}
	if a.verifier != nil {
		if err := a.verifier.Verify(subject, raw.Header, raw.Data); err != nil {
			return nil, fmt.Errorf("newest work of %s refused: %w", app, err)
		}
	}
	e, err := events.DecodeStored(raw)
	if err != nil {
		return nil, err
	}
	w, ok := e.Data.(*events.WorkData)
	if !ok {
		return nil, fmt.Errorf("newest work of %s is a %s", app, e.Type)
	}
	if w.Namespace != app.Namespace || w.Application != app.Name || w.Cluster != a.opts.Cluster {
		return nil, fmt.Errorf("newest work of %s is for %s/%s in %s", app, w.Namespace, w.Application, w.Cluster)
	}
	if app.UID != "" && w.UID != app.UID {
		// The application was made anew: its newest work is another's.
		return nil, nil
	}
	a.mu.Lock()
	a.desired[app] = w
	// After a restart the work's own span is gone: later reports and
	// repairs hang under the dispatcher's span that sent it.
	if _, ok := a.traces[app]; !ok {
		a.traces[app] = workTrace{release: w.Release, span: telemetry.SpanContextOf(e.TraceParent, e.TraceState)}
	}
	a.mu.Unlock()
	return w, nil
}
