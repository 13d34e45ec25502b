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
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/seal"
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
	// Site is the air-gapped site (its leaf node's JetStream domain) this
	// agent's NATS is: proposed as the ManagedCluster's site label, so the
	// hub sends its work there and takes its reports from there.
	Site string
	// Executor, when set, is the ServiceAccount the agent applies each
	// namespace's objects as (system:serviceaccount:<ns>:<Executor>;
	// cluster-scoped ones as the one in the agent's namespace): the
	// cluster's admin grants it what applications may do there.
	Executor string
	// Instruments record the agent's spans and metrics.
	Instruments telemetry.Instruments
	// HubWorkKeys are the public halves of the hub's work key (two while it
	// is rotated): only work sealed with one of them is applied (pkg/seal).
	// Empty: work is applied unsealed, as the hub's NATS permissions allow.
	HubWorkKeys []string
	// Identity is the agent's own NATS credentials file (its seed, made
	// on first start, and the user JWT the hub signs for it on accepting
	// the cluster: Enroll); Bootstrap the shared bootstrap credential it
	// asks to join with until then.
	Identity, Bootstrap string
	// Key signs the agent's joins: the key pair it logs in with.
	Key nkeys.KeyPair
	// BundleDir, when set, is a directory the agent applies hand-carried
	// work bundles from (pkg/bundle; kubectl flotilla bundle export), for a
	// site with no link to the hub; BundleInterval how often it looks.
	BundleDir      string
	BundleInterval time.Duration
}

// BindFlags binds the agent's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Cluster, "cluster-name", "", "this cluster's name on the hub (required)")
	fs.DurationVar(&o.Heartbeat, "heartbeat-interval", 10*time.Second, "heartbeat interval")
	fs.StringToStringVar(&o.Labels, "cluster-labels", nil, "labels for the ManagedCluster, k=v,k=v (used when it is created)")
	fs.StringVar(&o.Site, "site", "", "the air-gapped site whose NATS leaf node --nats-url is (its JetStream domain); empty: the hub's NATS")
	fs.StringVar(&o.Executor, "executor-service-account", "", "apply each namespace's objects as this ServiceAccount of the namespace (impersonation; empty: as the agent itself)")
	fs.StringVar(&o.Identity, "nats-identity", "", "the agent's own NATS credentials file: its key, made on first start, and the credential the hub signs for it on accepting the cluster (decentralized auth)")
	fs.StringVar(&o.Bootstrap, "nats-bootstrap-creds", "", "the bootstrap credentials file the agent asks to join with until the hub accepts it (with --nats-identity)")
	fs.StringVar(&o.BundleDir, "bundle-dir", "", "directory of hand-carried work bundles (kubectl flotilla bundle export) to apply, for a site with no link to the hub; each moves to applied/ or refused/ (needs --hub-work-key)")
	fs.DurationVar(&o.BundleInterval, "bundle-interval", 2*time.Second, "how often --bundle-dir is read")
	fs.StringSliceVar(&o.HubWorkKeys, "hub-work-key", nil, "public key(s) of the hub's work key: only work sealed with one is applied (the dispatcher's --work-seal-key)")
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
	// verifier, when set, checks every work message's seal (HubWorkKeys).
	verifier *seal.Verifier
	mu       sync.Mutex
	// desired is the newest work per application, for drift repair.
	desired map[apply.App]*events.WorkData
	// appliedMarks is the mark (markOf) of the work each application's last
	// apply recorded in its inventory: health is reported only for it.
	appliedMarks map[apply.App]string
	// removed are the UIDs of applications removed here: work for them is
	// stale (in memory: a restart forgets them).
	removed map[string]bool
	// traces is where each application's newest work sits in its trace.
	traces map[apply.App]workTrace

	tracer  trace.Tracer
	metrics *metrics

	// outbox holds the newest report per application, for the status
	// bundle (with BundleDir); outboxChanged says one is not written yet.
	outbox        map[string]bundle.Message
	outboxChanged bool
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
	opts.Labels = joinLabels(opts)
	if c == nil || c.Dynamic == nil || c.Kube == nil || c.Mapper == nil {
		return nil, errors.New("agent: the dynamic client, the Kubernetes client and the RESTMapper of the cluster are all required")
	}
	a := &Agent{
		opts: opts, log: log.With("cluster", opts.Cluster), nc: nc, js: js, dyn: c.Dynamic, cs: c.Kube,
		applier: apply.NewApplier(c.Dynamic, c.Kube, c.Mapper, opts.Instruments.T()),
		desired: map[apply.App]*events.WorkData{}, appliedMarks: map[apply.App]string{}, removed: map[string]bool{}, traces: map[apply.App]workTrace{},
		outbox: map[string]bundle.Message{},
		tracer: opts.Instruments.T(), metrics: newMetrics(),
	}
	if opts.Executor != "" {
		if c.As == nil {
			return nil, errors.New("agent: --executor-service-account needs clients that can impersonate")
		}
		a.applier.WithExecutor(Executors(c.As, opts.Executor))
	}
	if len(opts.HubWorkKeys) > 0 {
		v, err := seal.NewVerifier(opts.HubWorkKeys...)
		if err != nil {
			return nil, fmt.Errorf("agent: --hub-work-key: %w", err)
		}
		a.verifier = v
	} else {
		a.log.Warn("no --hub-work-key: work is applied unsealed, as the hub's NATS permissions let it through (pkg/seal)")
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
	// A few queries at once, each bounded in time (answer): a slow read
	// holds up no other, and a flood waits in NATS, not in goroutines.
	slots := make(chan struct{}, queryWorkers)
	sub, err := a.nc.Subscribe(bus.QuerySubject(a.opts.Cluster), func(msg *nats.Msg) {
		slots <- struct{}{}
		go func() {
			defer func() { <-slots }()
			a.answer(msg)
		}()
	})
	if err != nil {
		return fmt.Errorf("agent: query subscription: %w", err)
	}
	defer sub.Unsubscribe()

	// Hand-carried work needs no link, nor the hub's answer to a join.
	if a.opts.BundleDir != "" {
		go a.watchBundles(ctx, a.opts.BundleDir, max(a.opts.BundleInterval, 100*time.Millisecond))
	}
	// Until its streams exist (a hub or site just set up, a link not yet
	// up) a join is not stored: ask again, never give up.
	for {
		err := a.beat(ctx, events.TypeClusterJoin)
		if err == nil {
			break
		}
		a.log.Warn("ask to join, trying again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(a.opts.Heartbeat, time.Second)):
		}
	}
	a.log.Info("asked to join the hub", "heartbeat", a.opts.Heartbeat)
	go a.heartbeats(ctx)
	a.monitor.start(ctx)

	// Work flows only while the hub accepts this cluster. The agent reads
	// its own acceptance key, and pulls the consumer the hub made for it
	// on accepting it (its permissions name those alone).
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
		accepted, err := bus.Accepted(ctx, a.nc, a.opts.Cluster)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound), errors.Is(err, nats.ErrNoResponders):
			accepted = false // not (yet) known to the hub, or its streams not made yet
		case err != nil && ctx.Err() == nil:
			a.log.Warn("read acceptance", "err", err)
			accepted = consuming != nil // keep doing what we did
		}
		switch {
		case accepted && consuming == nil:
			if consuming, err = a.consume(ctx); err != nil {
				a.log.Info("accepted by the hub, its work consumer not there yet", "err", err)
				consuming = nil
				break
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

// consume pulls the work consumer the hub made for this cluster.
func (a *Agent) consume(ctx context.Context) (jetstream.ConsumeContext, error) {
	cons, err := a.js.Consumer(ctx, bus.StreamWork, bus.AgentConsumer(a.opts.Cluster))
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
	data := &events.ClusterJoinData{
		Cluster: a.opts.Cluster, KubernetesVersion: a.version,
		HeartbeatMillis: max(a.opts.Heartbeat.Milliseconds(), 1), Labels: a.opts.Labels, Problem: problem,
	}
	if typ == events.TypeClusterJoin && a.opts.Key != nil {
		pub, proof, err := creds.SignJoin(a.opts.Key, a.opts.Cluster, id)
		if err != nil {
			return fmt.Errorf("sign join: %w", err)
		}
		data.NKey, data.Proof = pub, proof
	}
	e := events.New(id, events.SourceAgent(a.opts.Cluster), typ, a.opts.Cluster, data)
	_, err := bus.Publish(ctx, a.js, bus.ClusterSubject(a.opts.Cluster, kind), e)
	return err
}

// Executors are the clients of each namespace's executor ServiceAccount,
// made once per namespace.
func Executors(as func(string) (dynamic.Interface, error), sa string) apply.Executor {
	var mu sync.Mutex
	made := map[string]dynamic.Interface{}
	return func(ns string) (dynamic.Interface, error) {
		if ns == "" {
			ns = apply.InventoryNamespace // cluster-scoped objects
		}
		mu.Lock()
		defer mu.Unlock()
		if c, ok := made[ns]; ok {
			return c, nil
		}
		c, err := as("system:serviceaccount:" + ns + ":" + sa)
		if err != nil {
			return nil, err
		}
		made[ns] = c
		return c, nil
	}
}
