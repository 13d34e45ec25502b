// Package dispatcher owns the dispatcher service: it turns a deploy step into
// one work message per target cluster (resolving topology policies against
// the cluster registry), removes deleted applications from their clusters,
// and keeps the registry: agents' joins and heartbeats become ManagedClusters
// on the hub, and the hub's acceptance is relayed to each agent.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/seal"
	"github.com/flotilla-dev/flotilla/pkg/site"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Options tune the dispatcher.
type Options struct {
	// StreamReplicas are the replicas of the streams and buckets it
	// creates (--stream-replicas): 3 on a NATS cluster.
	StreamReplicas int
	// AutoAccept accepts every cluster that joins (dev only).
	AutoAccept bool
	// MaxPending caps the ManagedClusters joins may create that wait to be
	// accepted: past it a join of a new cluster is refused (anyone holding
	// the bootstrap credential could otherwise fill the hub). Zero: 100.
	MaxPending int
	// PendingTTL is how long a ManagedCluster a join created may wait to
	// be accepted before the dispatcher deletes it (as Kubernetes does
	// pending CSRs): joins left by a flood free their places. Zero: 24h.
	PendingTTL time.Duration
	// MissedHeartbeats after which a cluster turns AVAILABLE Unknown.
	MissedHeartbeats int
	// CheckInterval is how often availability is re-evaluated.
	CheckInterval time.Duration
	// ReconcileInterval is how often the servers' revocations are checked
	// against the hub's (reconcileCredentials). Zero: a minute.
	ReconcileInterval time.Duration
	// Instruments record the dispatcher's spans and metrics.
	Instruments telemetry.Instruments
	// SealKey is the file of the hub's work key (an NKey seed): every work
	// message is sealed with it (pkg/seal). Empty: work goes unsealed.
	SealKey string
	// Sealer seals work (the main loads it from SealKey).
	Sealer *seal.Sealer
	// Sites are the JetStream domains of the air-gapped sites the hub
	// serves (pkg/site): a cluster labelled flotilla.dev/site=<site> gets
	// its work there, and its reports come from there.
	Sites []string
	// SiteSetup sizes the sites' streams (memory in tests).
	SiteSetup bus.SetupOptions
	// SiteConn connects the dispatcher to a site's own account at the hub
	// (site.Options.Conn; required with Sites).
	SiteConn func(site string) (*nats.Conn, error)
	// SiteCreds are the credentials files of the dispatcher's user in
	// each site's account (creds.Authority.SiteDispatcher), by site: the
	// main's SiteConn logs in with them.
	SiteCreds map[string]string
	// Issuer, when set, signs each accepted cluster's agent its own NATS
	// credential and revokes it once the cluster is no longer accepted
	// (pkg/creds); a join must then be signed by the key the cluster's
	// first join registered.
	Issuer Issuer
	// The issuer's keys and its system-account login (the main builds
	// Issuer from them): IssuerAgentKey and IssuerOperatorKey are seed
	// files, Account the Flotilla account's public key.
	IssuerAgentKey, IssuerOperatorKey, Account, SystemCreds string
}

// Issuer signs and revokes agents' NATS credentials (creds.Issuer).
type Issuer interface {
	IssueAfter(ctx context.Context, cluster, pub string, after time.Time) (string, error)
	Revoke(ctx context.Context, pub string, at time.Time) error
	RevokeAll(ctx context.Context, revoked map[string]time.Time) error
}

// BindFlags binds the dispatcher's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	bus.BindReplicasFlag(fs, &o.StreamReplicas)
	fs.BoolVar(&o.AutoAccept, "auto-accept", false, "accept every cluster that joins (dev only; otherwise kubectl flotilla cluster accept NAME)")
	fs.DurationVar(&o.PendingTTL, "pending-cluster-ttl", 24*time.Hour, "how long a ManagedCluster a join created may wait to be accepted before it is deleted")
	fs.IntVar(&o.MaxPending, "max-pending-clusters", 100, "most ManagedClusters that joins create and that wait to be accepted; past it a new cluster's join is refused")
	fs.IntVar(&o.MissedHeartbeats, "missed-heartbeats", 3, "missed heartbeats after which a cluster is no longer available")
	fs.DurationVar(&o.CheckInterval, "availability-check", time.Second, "how often cluster availability is evaluated")
	fs.StringSliceVar(&o.Sites, "site", nil, "JetStream domain of an air-gapped site the hub serves, whose leaf node links to the hub's NATS (repeatable)")
	fs.StringToStringVar(&o.SiteCreds, "site-creds", nil, "SITE=FILE: credentials file of the dispatcher's user in a site's own NATS account at the hub (one per --site)")
	fs.StringVar(&o.IssuerAgentKey, "issuer-agent-key", "", "seed file of the account's scoped signing key for agents: each accepted cluster's agent gets a credential signed with it (decentralized auth)")
	fs.StringVar(&o.IssuerOperatorKey, "issuer-operator-key", "", "seed file of the operator's signing key, to put revocations of removed clusters into the account")
	fs.StringVar(&o.Account, "nats-account", "", "public key of the clusters' NATS account, where agents are issued and revoked (with --issuer-agent-key)")
	fs.StringVar(&o.SystemCreds, "nats-system-creds", "", "credentials file of the dispatcher's system-account user, which pushes the account's revocations")
	fs.StringVar(&o.SealKey, "work-seal-key", "", "file of the hub's work key (NKey seed) every work message is sealed with; agents verify with its public key (--hub-work-key)")
}

// Dispatcher is one dispatcher replica.
type Dispatcher struct {
	opts     Options
	log      *slog.Logger
	js       jetstream.JetStream
	dyn      dynamic.Interface
	factory  dynamicinformer.DynamicSharedInformerFactory
	clusters cache.GenericLister
	// grants are the ScopeGrants, ManagedClusterSets and
	// ManagedClusterSetBindings placement is confined by.
	grants [3]cache.GenericLister
	kv     jetstream.KeyValue
	work   jetstream.Stream
	// queue holds the names of ManagedClusters whose acceptance may have
	// changed: the informer only enqueues, a worker relays.
	queue workqueue.TypedRateLimitingInterface[string]
	// siteQueues are each site's clusters' (queueOf), by site.
	siteQueues map[string]workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	accepted map[string]bool // last acceptance relayed to each agent (and its status written)
	// relayedKey is the agent key its ManagedCluster named at that relay.
	relayedKey map[string]string
	// lastSite is the site each cluster was last seen at: a deleted
	// cluster's consumer is removed there.
	lastSite map[string]string

	tracer trace.Tracer
	// verifier checks the seal of work found in the stream (with Sealer).
	verifier *seal.Verifier
	metrics  *metrics
	// sites are the air-gapped sites' streams, sources and links.
	sites *site.Manager
}

// New builds a dispatcher working with the hub through dyn.
func New(dyn dynamic.Interface, js jetstream.JetStream, log *slog.Logger, opts Options) (*Dispatcher, error) {
	if dyn == nil || js == nil || log == nil {
		return nil, errors.New("dispatcher: a hub client, JetStream and a logger are required")
	}
	if opts.MissedHeartbeats <= 0 {
		opts.MissedHeartbeats = 3
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = time.Second
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	d := &Dispatcher{
		opts: opts, log: log, js: js, dyn: dyn, factory: factory,
		clusters: factory.ForResource(clusterv1.ManagedClusterResource).Lister(),
		grants: [3]cache.GenericLister{
			factory.ForResource(grantv1alpha1.ScopeGrantResource).Lister(),
			factory.ForResource(clusterv1beta2.ManagedClusterSetResource).Lister(),
			factory.ForResource(clusterv1beta2.ManagedClusterSetBindingResource).Lister(),
		},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "managedclusters"}),
		accepted: map[string]bool{}, relayedKey: map[string]string{}, lastSite: map[string]string{}, tracer: opts.Instruments.T(),
		siteQueues: map[string]workqueue.TypedRateLimitingInterface[string]{},
	}
	for _, s := range opts.Sites {
		d.siteQueues[s] = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "managedclusters-site-" + s})
	}
	if opts.Sealer != nil {
		// What it finds in the work stream counts only if it sealed it.
		pub, err := opts.Sealer.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
		if d.verifier, err = seal.NewVerifier(pub); err != nil {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
	}
	d.metrics = newMetrics(d)
	if err := opts.Instruments.Register(d.metrics.collectors()...); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	return d, nil
}

// Run works until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	if err := bus.Setup(ctx, d.js, bus.SetupOptions{Owner: bus.OwnerDispatcher, Replicas: d.opts.StreamReplicas}); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	if err := bus.AwaitStreams(ctx, d.js, d.log, bus.StreamSteps); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	var err error
	if d.kv, err = d.js.KeyValue(ctx, bus.BucketClusters); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	if d.work, err = d.js.Stream(ctx, bus.StreamWork); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	// However Run ends, the queue's goroutines end with it.
	defer d.queue.ShutDown()
	sites, err := site.New(d.js, d.log, site.Options{Sites: d.opts.Sites, Setup: d.opts.SiteSetup,
		OnReconnect: d.siteReconnected, Conn: d.opts.SiteConn})
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	d.mu.Lock() // LiveReadConn reads it from the live-read server's goroutines
	d.sites = sites
	d.mu.Unlock()
	inf := d.factory.ForResource(clusterv1.ManagedClusterResource).Informer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			d.queueOf(key).Add(key)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	d.factory.Start(ctx.Done())
	for res, ok := range d.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("dispatcher: the cache of %s did not sync", res.Resource)
		}
	}
	// One worker relays acceptance, and one per site for the site's
	// clusters (whose consumers are made over its link: a site that does
	// not answer holds up only its own): the informer's handlers only
	// enqueue.
	var worker sync.WaitGroup
	defer worker.Wait()
	defer d.queue.ShutDown() // runs first: the worker's Get returns and it ends
	for _, q := range d.siteQueues {
		defer q.ShutDown()
		worker.Go(func() {
			for d.processNext(ctx, q) {
			}
		})
	}
	sitesCtx, stopSites := context.WithCancel(ctx)
	defer stopSites()
	worker.Go(func() {
		for d.processNext(ctx, d.queue) {
		}
	})
	worker.Go(func() { d.sites.Run(sitesCtx) })

	for _, stream := range []string{bus.StreamSteps, bus.StreamClusters} {
		sub, err := d.metrics.dead.Watch(d.js.Conn(), stream)
		if err != nil {
			return fmt.Errorf("dispatcher: %w", err)
		}
		defer sub.Unsubscribe()
	}
	steps, err := d.js.CreateOrUpdateConsumer(ctx, bus.StreamSteps, jetstream.ConsumerConfig{
		Durable: bus.ConsumerDispatcher, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 64,
		MaxDeliver: bus.MaxDeliver,
	})
	if err != nil {
		return fmt.Errorf("dispatcher: steps consumer: %w", err)
	}
	d.metrics.consumers.Watch(steps)
	sc, err := bus.Consume(ctx, steps, d.log, d.handleStep)
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	defer sc.Stop()
	joins, err := d.js.CreateOrUpdateConsumer(ctx, bus.StreamClusters, jetstream.ConsumerConfig{
		Durable: bus.ConsumerDispatcher, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		// Only what arrives from now on matters for liveness; joins are
		// re-sent by agents that start.
		DeliverPolicy: jetstream.DeliverNewPolicy,
		MaxDeliver:    bus.MaxDeliver,
	})
	if err != nil {
		return fmt.Errorf("dispatcher: clusters consumer: %w", err)
	}
	d.metrics.consumers.Watch(joins)
	jc, err := bus.Consume(ctx, joins, d.log, d.handleCluster)
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	defer jc.Stop()
	bundles, err := d.js.CreateOrUpdateConsumer(ctx, bus.StreamBundles, jetstream.ConsumerConfig{
		Durable: bus.ConsumerDispatcher, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
		MaxAckPending: 4, MaxDeliver: bus.MaxDeliver,
	})
	if err != nil {
		return fmt.Errorf("dispatcher: bundles consumer: %w", err)
	}
	d.metrics.consumers.Watch(bundles)
	bc, err := bus.Consume(ctx, bundles, d.log, d.handleStatusBundle)
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	defer bc.Stop()

	d.log.Info("dispatcher running", "auto_accept", d.opts.AutoAccept)
	reconcile := func() {
		if err := d.reconcileCredentials(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("reconcile credentials, again in a while", "err", err)
		}
		if err := d.expirePending(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("expire clusters never accepted, again in a while", "err", err)
		}
	}
	reconcile()
	t := time.NewTicker(d.opts.CheckInterval)
	defer t.Stop()
	r := time.NewTicker(d.opts.reconcileInterval())
	defer r.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := d.checkAvailability(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("availability check", "err", err)
			}
		case <-r.C:
			reconcile()
		}
	}
}

func (o Options) reconcileInterval() time.Duration {
	if o.ReconcileInterval <= 0 {
		return time.Minute
	}
	return o.ReconcileInterval
}

// handleStep dispatches deploy steps that start and removes deleted applications.
func (d *Dispatcher) handleStep(ctx context.Context, e *events.Event) error {
	switch data := e.Data.(type) {
	case *events.StepData:
		if e.Type != events.TypeStepStarted || data.StepType != "deploy" {
			return nil
		}
		return d.dispatch(ctx, e, data)
	case *events.ApplicationDeletedData:
		return d.remove(ctx, e, data)
	}
	return nil
}

// dispatch sends a deploy step's work, in a span (under the step's) with a
// child per cluster whose context the cluster's work message carries.
func (d *Dispatcher) dispatch(ctx context.Context, e *events.Event, step *events.StepData) (err error) {
	ctx, span := d.tracer.Start(telemetry.Extract(ctx, e.TraceParent, e.TraceState), "dispatch "+step.Step,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(stepAttrs(step.AppRef, step.Step)...))
	defer func() {
		telemetry.SetError(span, err)
		span.End()
	}()
	known, grants, err := d.knownScope()
	if err != nil {
		return err
	}
	result := &events.StepDispatchedData{AppRef: step.AppRef, Step: step.Step}
	placement, err := Place(step.Namespace, step.Policies, known, grants)
	if _, refused := problem.As(err); refused {
		// The cache may not have seen a cluster just registered or
		// accepted, or a grant just made: a refusal is decided on the
		// hub's own answer.
		live, lgrants, lerr := d.liveScope(ctx)
		if lerr != nil {
			return lerr
		}
		placement, err = Place(step.Namespace, step.Policies, live, lgrants)
	}
	perr, refused := problem.As(err)
	switch {
	case refused:
		// Nothing goes to any cluster of this step.
		result.Reason, result.Error = perr.Reason, perr.Message
		span.SetStatus(codes.Error, telemetry.Sanitize(perr.Message))
		d.metrics.refused.WithLabelValues(perr.Reason).Inc()
		d.log.InfoContext(ctx, "step not dispatched", "app", step.Namespace+"/"+step.Application, "release", step.Release, "step", step.Step, "reason", perr.Message)
	case err != nil:
		return err
	case len(placement.Clusters) == 0:
		// allowEmpty: nothing to deploy is a success.
		result.Clusters = []string{}
	default:
		// A late redelivery of an older step must not replace newer desired
		// state (the work stream keeps only the last): check every cluster
		// before sending to any.
		last := map[string]uint64{}
		sent := map[string]bool{}
		for _, c := range placement.Clusters {
			newer, seq, lastID, err := d.newerWork(ctx, bus.WorkSubject(c, step.Namespace, step.Application), step.AppRef, step.Index)
			if err != nil {
				return err
			}
			last[c] = seq
			// This very work is the cluster's newest already: a step
			// delivered again (a dispatcher killed before its ack, or down
			// for longer than the stream's duplicate window) sends it no
			// second time, so the agent does not apply it again.
			sent[c] = lastID == events.WorkID(step.AppRef, step.Step, c)
			if newer {
				span.SetAttributes(telemetry.AttrStale.Bool(true))
				d.log.InfoContext(ctx, "stale step not dispatched: a cluster has newer work", "app", step.Namespace+"/"+step.Application, "release", step.Release, "cluster", c)
				return nil
			}
		}
		snap, err := d.workSnapshot(ctx, step.Snapshot)
		if err != nil {
			return err
		}
		for _, c := range placement.Clusters {
			if sent[c] {
				continue
			}
			work := &events.WorkData{AppRef: step.AppRef, Cluster: c, Step: step.Step, StepIndex: step.Index, Snapshot: snap, TargetNamespace: placement.Namespace, TakeOver: step.TakeOver, ReadOnly: step.ReadOnly}
			we := events.New(events.WorkID(step.AppRef, step.Step, c), events.SourceDispatcher, events.TypeWork, step.Namespace+"/"+step.Application, work)
			// Only over the work checked above: another replica sending newer
			// work meanwhile makes this publish fail, and the step is checked again.
			err := d.send(ctx, bus.WorkSubject(c, step.Namespace, step.Application), we, c, "apply", jetstream.WithExpectLastSequencePerSubject(last[c]))
			if bus.IsWrongLastSequence(err) {
				return bus.Retry(100*time.Millisecond, err)
			}
			if err != nil {
				return err
			}
		}
		result.Clusters = placement.Clusters
		span.SetAttributes(telemetry.AttrClusters.StringSlice(placement.Clusters))
		d.log.InfoContext(ctx, "step dispatched", "app", step.Namespace+"/"+step.Application, "release", step.Release, "step", step.Step, "clusters", placement.Clusters)
	}
	de := events.New(events.DispatchID(step.AppRef, step.Step), events.SourceDispatcher, events.TypeStepDispatched, step.Namespace+"/"+step.Application, result)
	de.TraceParent, de.TraceState = telemetry.Inject(ctx)
	_, err = bus.Publish(ctx, d.js, bus.DispatchSubject(step.Namespace, step.Application), de)
	return err
}

// workSnapshot is what a work message carries of s (package snapshot
// decides: inline as it is, compressed when it travels by name).
func (d *Dispatcher) workSnapshot(ctx context.Context, s *events.Snapshot) (*events.Snapshot, error) {
	if s == nil || s.ObjectStore == "" {
		return s, nil
	}
	store, err := bus.Snapshots(ctx, d.js)
	if err != nil {
		return nil, err
	}
	var maxPayload int64
	if nc := d.js.Conn(); nc != nil {
		maxPayload = nc.MaxPayload()
	}
	out, byName, err := snapshot.ForWork(ctx, store, s, snapshot.GzipLimitFor(maxPayload))
	if errors.Is(err, snapshot.ErrInvalid) {
		return nil, bus.Terminate(err)
	}
	if err != nil {
		return nil, err
	}
	if byName {
		d.log.WarnContext(ctx, "snapshot too large to send compressed: agents must read it from the object store", "snapshot", s.ObjectStore)
	}
	return out, nil
}

// send publishes one cluster's work in a span of its own, whose context the
// work message carries to the agent.
func (d *Dispatcher) send(ctx context.Context, subject string, we *events.Event, cluster, kind string, opts ...jetstream.PublishOpt) error {
	ctx, span := d.tracer.Start(ctx, "send work", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(telemetry.AttrCluster.String(cluster), telemetry.AttrWorkKind.String(kind), telemetry.AttrEventID.String(we.ID)))
	defer span.End()
	we.TraceParent, we.TraceState = telemetry.Inject(ctx)
	var sealer bus.Sealer // a nil *seal.Sealer must not be a non-nil Sealer
	if d.opts.Sealer != nil {
		sealer = d.opts.Sealer
	}
	ack, err := bus.PublishSealed(ctx, d.js, subject, we, sealer, opts...)
	if err != nil {
		telemetry.SetError(span, err)
		return err
	}
	if ack.Duplicate {
		// A redelivered step: the work went out before.
		span.SetAttributes(telemetry.AttrDuplicate.Bool(true))
		return nil
	}
	d.metrics.dispatched.WithLabelValues(cluster, kind).Inc()
	return nil
}

func stepAttrs(ref events.AppRef, step string) []attribute.KeyValue {
	return []attribute.KeyValue{
		telemetry.AttrApplication.String(ref.Application), telemetry.AttrNamespace.String(ref.Namespace),
		telemetry.AttrRelease.String(ref.Release), telemetry.AttrStep.String(step),
	}
}

// remove sends a delete to every cluster that has work of the application.
func (d *Dispatcher) remove(ctx context.Context, e *events.Event, app *events.ApplicationDeletedData) error {
	ctx, span := d.tracer.Start(telemetry.Extract(ctx, e.TraceParent, e.TraceState), "remove application",
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(telemetry.AttrApplication.String(app.Application), telemetry.AttrNamespace.String(app.Namespace)))
	defer span.End()
	// The work stream keeps one message per cluster and application: its
	// subjects say which clusters hold the application.
	info, err := d.work.Info(ctx, jetstream.WithSubjectFilter(bus.WorkAppFilter(app.Namespace, app.Application)))
	if err != nil {
		return err
	}
	for subject := range info.State.Subjects {
		cluster := bus.WorkCluster(subject)
		work := &events.WorkData{AppRef: events.AppRef{Namespace: app.Namespace, Application: app.Application, UID: app.UID}, Cluster: cluster, Delete: true}
		we := events.New(app.UID+".delete."+cluster, events.SourceDispatcher, events.TypeWork, app.Namespace+"/"+app.Application, work)
		if err := d.send(ctx, subject, we, cluster, "delete"); err != nil {
			return err
		}
		d.log.InfoContext(ctx, "removal dispatched", "app", app.Namespace+"/"+app.Application, "cluster", cluster)
	}
	return nil
}

// newerWork reports whether subject's last work is newer than step index
// of run ref (a newer run of the same application, its removal, or a later
// step of the same run), and that work's sequence (0: none) and event ID
// (empty: not the hub's, or not this application's).
func (d *Dispatcher) newerWork(ctx context.Context, subject string, ref events.AppRef, index int) (newer bool, seq uint64, id string, err error) {
	raw, err := d.work.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, 0, "", nil
	}
	if err != nil {
		return false, 0, "", err
	}
	if d.verifier != nil {
		if err := d.verifier.Verify(raw.Subject, raw.Header, raw.Data); err != nil {
			// Not the hub's: it must not hold the hub's work back.
			d.log.WarnContext(ctx, "work in the stream is not sealed by the hub: replacing it", "subject", subject, "err", err)
			return false, raw.Sequence, "", nil
		}
	}
	e, err := events.DecodeStored(raw)
	if err != nil {
		return false, raw.Sequence, "", nil // unreadable: replace it
	}
	w, ok := e.Data.(*events.WorkData)
	if !ok || w.UID != ref.UID {
		return false, raw.Sequence, "", nil
	}
	return w.Supersedes(ref, index), raw.Sequence, e.ID, nil
}
