package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// monitor watches what the agent applied (one informer per resource, on
// Flotilla's label only), repairs drift, and re-assesses an application's
// health whenever one of its objects changes.
type monitor struct {
	a       *Agent
	factory dynamicinformer.DynamicSharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[apply.App]

	mu        sync.Mutex
	ctx       context.Context
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
	tracked   map[apply.App][]apply.Ref
	last      map[apply.App]string // fingerprint of the last status reported
}

func newMonitor(a *Agent) *monitor {
	return &monitor{
		a: a,
		factory: dynamicinformer.NewFilteredDynamicSharedInformerFactory(a.dyn, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
			o.LabelSelector = apply.LabelManagedBy + "=" + apply.ManagedByValue
		}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[apply.App](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[apply.App]{Name: "health"}),
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		tracked:   map[apply.App][]apply.Ref{},
		last:      map[apply.App]string{},
	}
}

func (m *monitor) run(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.queue.ShutDown()
	}()
	for {
		app, quit := m.queue.Get()
		if quit {
			return
		}
		if err := m.assess(ctx, app); err != nil && ctx.Err() == nil {
			m.a.log.Warn("assess health", "app", app.String(), "err", err)
			m.queue.AddRateLimited(app)
		} else {
			m.queue.Forget(app)
		}
		m.queue.Done(app)
	}
}

// adopt starts watching every application the cluster's inventories record.
func (m *monitor) adopt(ctx context.Context) error {
	invs, err := m.a.applier.Inventories(ctx)
	if err != nil {
		return err
	}
	for app, refs := range invs {
		m.watch(app, refs)
	}
	return nil
}

// track records what an apply put in the cluster.
func (m *monitor) track(app apply.App, outcomes []apply.Outcome) {
	var refs []apply.Ref
	for _, o := range outcomes {
		if o.Err == nil {
			refs = append(refs, o.Ref)
		}
	}
	m.watch(app, refs)
}

func (m *monitor) watch(app apply.App, refs []apply.Ref) {
	m.mu.Lock()
	m.tracked[app] = refs
	ctx := m.ctx
	var started []cache.SharedIndexInformer
	for _, r := range refs {
		gvr := r.GVR()
		if _, ok := m.informers[gvr]; ok {
			continue
		}
		inf := m.factory.ForResource(gvr).Informer()
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { m.changedObject(nil, obj) },
			UpdateFunc: func(old, obj any) { m.changedObject(old, obj) },
			DeleteFunc: func(obj any) { m.deletedObject(obj) },
		})
		m.informers[gvr] = inf
		started = append(started, inf)
	}
	m.mu.Unlock()
	if ctx != nil && len(started) > 0 {
		m.factory.Start(ctx.Done())
		for _, inf := range started {
			cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
		}
	}
}

func (m *monitor) forget(app apply.App) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tracked, app)
	delete(m.last, app)
}

func appOf(obj any) (apply.App, *unstructured.Unstructured, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return apply.App{}, nil, false
	}
	l := u.GetLabels()
	return apply.App{Namespace: l[apply.LabelAppNS], Name: l[apply.LabelApplication]}, u, l[apply.LabelApplication] != ""
}

// changedObject repairs a spec change made behind Flotilla's back (the
// generation moved) and re-assesses health.
func (m *monitor) changedObject(old, obj any) {
	app, u, ok := appOf(obj)
	if !ok {
		return
	}
	app, tracked := m.trackedApp(app)
	if !tracked {
		return
	}
	// A spec change moves the generation; kinds without one (ConfigMaps,
	// Secrets, ...) change their resourceVersion only on content changes.
	if o, _ := old.(*unstructured.Unstructured); o != nil &&
		(o.GetGeneration() != u.GetGeneration() || u.GetGeneration() == 0 && o.GetResourceVersion() != u.GetResourceVersion()) {
		m.repair(app, u, "modified")
	}
	m.queue.Add(app)
}

func (m *monitor) deletedObject(obj any) {
	app, u, ok := appOf(obj)
	if !ok {
		return
	}
	if app, tracked := m.trackedApp(app); tracked {
		m.repair(app, u, "deleted")
		m.queue.Add(app)
	}
}

// trackedApp finds the tracked application (with its UID) a label pair names.
func (m *monitor) trackedApp(app apply.App) (apply.App, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t := range m.tracked {
		if t.Namespace == app.Namespace && t.Name == app.Name {
			return t, true
		}
	}
	return app, false
}

// repair re-applies the desired version of obj; if that changed anything,
// the drift is reported.
func (m *monitor) repair(app apply.App, obj *unstructured.Unstructured, change string) {
	ctx := m.ctx
	if ctx == nil || ctx.Err() != nil {
		return
	}
	work, err := m.a.work(ctx, app)
	if err != nil || work == nil || work.Delete {
		return
	}
	objs, err := m.a.objects(ctx, work.Snapshot)
	if err != nil {
		return
	}
	for _, want := range objs {
		if want.GetKind() != obj.GetKind() || want.GetName() != obj.GetName() || want.GroupVersionKind().Group != obj.GroupVersionKind().Group {
			continue
		}
		applied, err := m.a.applier.ApplyObject(ctx, app, work.Release, want)
		if err != nil {
			m.a.log.Warn("repair drift", "app", app.String(), "object", obj.GetKind()+" "+obj.GetName(), "err", err)
			return
		}
		// Someone else's spec change moved the generation; putting ours back
		// moves it again. An apply that changes nothing leaves it alone (the
		// event was our own apply).
		if change == "modified" && (obj.GetGeneration() != 0 && applied.GetGeneration() == obj.GetGeneration() ||
			obj.GetGeneration() == 0 && applied.GetResourceVersion() == obj.GetResourceVersion()) {
			return
		}
		m.a.metrics.drift.WithLabelValues(m.a.opts.Cluster, change).Inc()
		// The repair belongs to the release whose objects it put back.
		if w, ok := m.a.traceOf(app); ok && w.release == work.Release {
			ctx = trace.ContextWithSpanContext(ctx, w.span)
		}
		ctx, span := m.a.tracer.Start(ctx, "repair drift", trace.WithAttributes(telemetry.AttrCluster.String(m.a.opts.Cluster),
			telemetry.AttrObject.String(obj.GetKind()+" "+obj.GetNamespace()+"/"+obj.GetName()), telemetry.AttrDriftChange.String(change)))
		defer span.End()
		m.a.log.InfoContext(ctx, "drift repaired", "app", app.String(), "object", obj.GetKind()+" "+obj.GetName(), "change", change)
		gvk := obj.GroupVersionKind()
		d := &events.ClusterDriftData{AppRef: work.AppRef, Cluster: m.a.opts.Cluster, Change: change,
			Object: events.ObjectStatus{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName(),
				Generation: applied.GetGeneration(), Health: events.HealthInProgress}}
		id := fmt.Sprintf("%s.drift.%s.%d", m.a.opts.Cluster, app.UID, time.Now().UnixNano())
		e := events.New(id, events.SourceAgent(m.a.opts.Cluster), events.TypeClusterDrift, app.String(), d)
		e.TraceParent, e.TraceState = telemetry.Inject(ctx)
		if _, err := bus.Publish(ctx, m.a.js, bus.StatusSubject(m.a.opts.Cluster, app.Namespace, app.Name), e); err != nil {
			m.a.log.WarnContext(ctx, "report drift", "err", err)
		}
		return
	}
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
	st := &events.ClusterStatusData{AppRef: work.AppRef, Cluster: m.a.opts.Cluster, Step: work.Step, Phase: events.ClusterApplied, ObservedAt: time.Now().UTC()}
	for _, r := range refs {
		m.mu.Lock()
		inf := m.informers[r.GVR()]
		m.mu.Unlock()
		var obj *unstructured.Unstructured
		if inf != nil {
			key := r.Name
			if r.Namespace != "" {
				key = r.Namespace + "/" + r.Name
			}
			if item, exists, _ := inf.GetStore().GetByKey(key); exists {
				obj, _ = item.(*unstructured.Unstructured)
			}
		}
		st.Objects = append(st.Objects, apply.Health(r, obj))
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

// work is the newest work for app: from memory, else (after a restart) the
// last message of its subject on the work stream.
func (a *Agent) work(ctx context.Context, app apply.App) (*events.WorkData, error) {
	a.mu.Lock()
	w := a.desired[app]
	a.mu.Unlock()
	if w != nil {
		return w, nil
	}
	stream, err := a.js.Stream(ctx, bus.StreamWork)
	if err != nil {
		return nil, err
	}
	raw, err := stream.GetLastMsgForSubject(ctx, bus.WorkSubject(a.opts.Cluster, app.Namespace, app.Name))
	if err != nil {
		return nil, fmt.Errorf("newest work of %s: %w", app, err)
	}
	e, err := events.DecodeStored(raw)
	if err != nil {
		return nil, err
	}
	w, ok := e.Data.(*events.WorkData)
	if !ok {
		return nil, fmt.Errorf("newest work of %s is a %s", app, e.Type)
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
