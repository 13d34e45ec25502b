// Package agent owns the cluster-agent: it runs inside one managed cluster
// with only an outbound NATS connection, joins the hub and beats, pulls its
// own cluster's work once accepted, applies it (package apply), repairs
// drift, reports health whenever it changes, and answers live queries about
// the objects Flotilla manages there.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Options of one agent.
type Options struct {
	// Cluster is this cluster's name on the hub (a DNS-1123 label).
	Cluster string
	// Heartbeat is the interval of heartbeats; the hub marks the cluster
	// unavailable after three missed ones.
	Heartbeat time.Duration
	// Labels proposed for the ManagedCluster when it is created.
	Labels map[string]string
	// Instruments record the agent's spans and metrics.
	Instruments telemetry.Instruments
}

// BindFlags binds the agent's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Cluster, "cluster-name", "", "this cluster's name on the hub (required)")
	fs.DurationVar(&o.Heartbeat, "heartbeat-interval", 10*time.Second, "heartbeat interval")
	fs.StringToStringVar(&o.Labels, "cluster-labels", nil, "labels for the ManagedCluster, k=v,k=v (used when it is created)")
}

// Agent is one cluster's agent.
type Agent struct {
	opts    Options
	log     *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	dyn     dynamic.Interface
	cs      kubernetes.Interface
	applier *apply.Applier
	version string

	monitor *monitor
	mu      sync.Mutex
	// desired is the newest work per application, for drift repair.
	desired map[apply.App]*events.WorkData
	// traces is where each application's newest work sits in its trace.
	traces map[apply.App]workTrace

	tracer  trace.Tracer
	metrics *metrics
}

// New builds an agent over its own cluster's clients.
func New(c *hub.Clients, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, opts Options) (*Agent, error) {
	if opts.Cluster == "" {
		return nil, errors.New("agent: --cluster-name is required")
	}
	if msgs := validation.IsDNS1123Label(opts.Cluster); len(msgs) > 0 {
		return nil, fmt.Errorf("agent: --cluster-name %q is not a DNS-1123 label: %s", opts.Cluster, strings.Join(msgs, "; "))
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 10 * time.Second
	}
	if c == nil || c.Dynamic == nil || c.Kube == nil || c.Mapper == nil {
		return nil, errors.New("agent: the dynamic client, the Kubernetes client and the RESTMapper of the cluster are all required")
	}
	a := &Agent{
		opts: opts, log: log.With("cluster", opts.Cluster), nc: nc, js: js, dyn: c.Dynamic, cs: c.Kube,
		applier: apply.NewApplier(c.Dynamic, c.Kube, c.Mapper, opts.Instruments.T()),
		desired: map[apply.App]*events.WorkData{}, traces: map[apply.App]workTrace{},
		tracer: opts.Instruments.T(), metrics: newMetrics(),
	}
	a.monitor = newMonitor(a)
	if err := opts.Instruments.Register(a.metrics.collectors()...); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return a, nil
}

// Run joins the hub and works until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if v, err := a.cs.Discovery().ServerVersion(); err == nil {
		a.version = v.GitVersion
	} else {
		a.log.Warn("cluster version unknown", "err", err)
	}
	// The hub's services own the streams; an agent's NATS user may not
	// create them, only wait for them.
	kv, err := a.clustersBucket(ctx)
	if err != nil {
		return err
	}
	sub, err := a.nc.Subscribe(bus.QuerySubject(a.opts.Cluster), a.answer)
	if err != nil {
		return fmt.Errorf("agent: query subscription: %w", err)
	}
	defer sub.Unsubscribe()

	if err := a.beat(ctx, events.TypeClusterJoin); err != nil {
		return fmt.Errorf("agent: join: %w", err)
	}
	a.log.Info("asked to join the hub", "heartbeat", a.opts.Heartbeat)
	go a.heartbeats(ctx)
	a.monitor.start(ctx)

	// Work flows only while the hub accepts this cluster. The agent reads
	// its own acceptance key (its permissions name that key alone).
	var consuming jetstream.ConsumeContext
	stop := func(why string) {
		if consuming != nil {
			consuming.Stop()
			consuming = nil
			a.log.Info(why)
		}
	}
	defer stop("stopping")
	poll := time.NewTicker(min(a.opts.Heartbeat, time.Second))
	defer poll.Stop()
	for {
		accepted := false
		if entry, err := kv.Get(ctx, bus.AcceptedKey(a.opts.Cluster)); err == nil {
			accepted = string(entry.Value()) == "true"
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
			a.log.Warn("read acceptance", "err", err)
			accepted = consuming != nil // keep doing what we did
		}
		switch {
		case accepted && consuming == nil:
			if consuming, err = a.consume(ctx); err != nil {
				return err
			}
			a.log.Info("accepted by the hub: pulling work")
		case !accepted:
			stop("not accepted by the hub: applying nothing")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		}
	}
}

// clustersBucket waits for the hub's services to have created the clusters bucket.
func (a *Agent) clustersBucket(ctx context.Context) (jetstream.KeyValue, error) {
	for {
		kv, err := a.js.KeyValue(ctx, bus.BucketClusters)
		if err == nil {
			return kv, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("agent: clusters bucket: %w", err)
		}
		a.log.Info("waiting for the hub's streams")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) consume(ctx context.Context) (jetstream.ConsumeContext, error) {
	cons, err := a.js.CreateOrUpdateConsumer(ctx, bus.StreamWork, jetstream.ConsumerConfig{
		Durable:       bus.AgentConsumer(a.opts.Cluster),
		FilterSubject: bus.WorkFilter(a.opts.Cluster),
		// The newest desired state per application: an agent offline for a
		// week does not replay every release in between.
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       2 * time.Minute,
		MaxAckPending: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: work consumer: %w", err)
	}
	a.metrics.consumers.Watch(cons)
	// The monitor learns what is already applied, so drift is repaired
	// after a restart too.
	if err := a.monitor.adopt(ctx); err != nil {
		a.log.Warn("adopt inventories", "err", err)
	}
	return bus.Consume(ctx, cons, a.log, a.handleWork)
}

func (a *Agent) heartbeats(ctx context.Context) {
	t := time.NewTicker(a.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.beat(ctx, events.TypeClusterHeartbeat); err != nil && ctx.Err() == nil {
				a.log.Warn("heartbeat", "err", err)
			}
		}
	}
}

func (a *Agent) beat(ctx context.Context, typ string) error {
	kind := "heartbeat"
	if typ == events.TypeClusterJoin {
		kind = "join"
	}
	id := fmt.Sprintf("%s.%s.%d", a.opts.Cluster, kind, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(ctx, a.opts.Heartbeat)
	defer cancel()
	// Each beat says whether the cluster's API server answers, so the hub
	// shows why a cluster that is connected cannot work.
	problem := ""
	if _, err := a.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		problem = "the cluster's API server is not ready: " + err.Error()
	}
	e := events.New(id, events.SourceAgent(a.opts.Cluster), typ, a.opts.Cluster, &events.ClusterJoinData{
		Cluster: a.opts.Cluster, KubernetesVersion: a.version,
		HeartbeatMillis: max(a.opts.Heartbeat.Milliseconds(), 1), Labels: a.opts.Labels, Problem: problem,
	})
	_, err := bus.Publish(ctx, a.js, bus.ClusterSubject(a.opts.Cluster, kind), e)
	return err
}

// handleWork applies one work message (the release's objects, or removal)
// in a span under the dispatcher's, with a child per object applied.
func (a *Agent) handleWork(ctx context.Context, e *events.Event) (err error) {
	d, ok := e.Data.(*events.WorkData)
	if !ok || d.Cluster != a.opts.Cluster {
		return bus.Terminate(fmt.Errorf("work %s is not for cluster %s", e.ID, a.opts.Cluster))
	}
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
	res, err := a.applier.Apply(ctx, app, d.Release, objs)
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
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return true
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err)
}
