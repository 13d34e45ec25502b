// Package gate owns the gate service: it holds manual workflow steps
// (deploy with auto: false, suspend without duration), tells bots what
// waits, takes decisions over NATS (NKey-signed CloudEvents), HTTP (the
// CloudEvents HTTP binding, HMAC-signed) and the CLI (a resume request on
// the Application's status, which needs RBAC), binds each decision to one
// application, release and step, audits every decision, and tells the
// planner when a step may go on or must fail.
//
// Where each concern lives:
//
//	gate.go         Gate, Options, New, Run: the wiring
//	waits.go        the wait of a held step in the gate's KV bucket, its one compare-and-set, holding and ending it
//	decide.go       decide: every rule of a decision, pure (replay, stale, step, decided, approvers, quorum)
//	refusals.go     the reasons a decision is refused, with their HTTP status and metric outcome
//	send.go         take and record a decision, send it to the planner (recorded first, sent second), resend unsent ones
//	request.go      the approval request to bots
//	intake_nats.go  decisions over NATS
//	intake_http.go  the webhook
//	intake_cli.go   resume requests written by kubectl flotilla workflow resume
//	auth.go         the trust configuration and signatures
//	audit.go        audit events and Kubernetes Events
//	trace.go        the wait's span
package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/deploy/admission"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Ways a decision arrives.
const (
	ViaNATS = "nats"
	ViaHTTP = "http"
	ViaCLI  = "cli"
)

// Options of the gate.
type Options struct {
	// StreamReplicas are the replicas of the streams and buckets it
	// creates (--stream-replicas): 3 on a NATS cluster.
	StreamReplicas int
	// Config is the trust configuration file (identities, keys, secrets).
	Config string
	// Listen is the webhook's address (the main binds it).
	Listen string
	// TLSCert and TLSKey, when set, make the webhook HTTPS (it faces the
	// internet: a bot's secret-signed calls should not cross it in clear).
	TLSCert, TLSKey string
	// Instruments record the gate's spans and metrics; the webhook's
	// /metrics serves Instruments.Metrics when it is a Gatherer too.
	Instruments telemetry.Instruments
}

// BindFlags binds the gate's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	bus.BindReplicasFlag(fs, &o.StreamReplicas)
	fs.StringVar(&o.Config, "config", "", "trust configuration: identities with NKeys, HMAC secrets, groups (YAML)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8085", "address of the approval webhook (POST /v1/approvals)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "PEM certificate the webhook serves HTTPS with (with --tls-key)")
	fs.StringVar(&o.TLSKey, "tls-key", "", "PEM key of --tls-cert")
}

// Gate is one gate replica.
type Gate struct {
	cfg   *Config
	log   *slog.Logger
	js    jetstream.JetStream
	waits *waits
	dyn   dynamic.Interface
	cs    kubernetes.Interface
	now   func() time.Time
	opts  Options

	resumes *resumes

	metrics   prometheus.Gatherer
	decisions *prometheus.CounterVec
	wait      *prometheus.HistogramVec
	consumers *bus.ConsumerMetrics
	dead      *bus.DeadLetters
	limits    *refusalLimits
	tracer    trace.Tracer
}

// New builds a gate on the hub's clients (dyn reads Applications, cs
// writes Events and asks SubjectAccessReviews) and JetStream js.
func New(dyn dynamic.Interface, cs kubernetes.Interface, js jetstream.JetStream, log *slog.Logger, cfg *Config, opts Options) (*Gate, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	g := &Gate{cfg: cfg, log: log, js: js, dyn: dyn, cs: cs, now: time.Now, opts: opts, tracer: opts.Instruments.T(),
		consumers: bus.NewConsumerMetrics(), dead: bus.NewDeadLetters(log), resumes: newResumes(), limits: newRefusalLimits()}
	g.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flotilla_gate_decisions_total",
		Help: "Decisions received, by way in and outcome (recorded, or the refusal's reason).",
	}, []string{"via", "outcome"})
	g.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "flotilla_gate_approval_wait_seconds", Help: "Time a step waited from the approval request to its decision, by decision (approve, reject).",
		Buckets: []float64{1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600},
	}, []string{"decision"})
	ins := opts.Instruments
	if ins.Metrics == nil {
		ins.Metrics = telemetry.NewRegistry()
	}
	if gth, ok := ins.Metrics.(prometheus.Gatherer); ok {
		g.metrics = gth
	} else {
		g.metrics = prometheus.NewRegistry()
	}
	if err := ins.Register(g.decisions, g.wait, g.consumers, g.dead.Collector()); err != nil {
		return nil, fmt.Errorf("gate: %w", err)
	}
	return g, nil
}

// Run serves until ctx ends. When ln is not nil the webhook serves on it,
// with srv (nil: a server with the gate's timeouts); Run closes ln.
func (g *Gate) Run(ctx context.Context, ln net.Listener, srv *http.Server) error {
	if ln != nil {
		defer ln.Close() // also when Run fails before serving
	}
	if err := bus.Setup(ctx, g.js, bus.SetupOptions{Owner: bus.OwnerGate, Replicas: g.opts.StreamReplicas}); err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	if err := bus.AwaitStreams(ctx, g.js, g.log, bus.StreamSteps); err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	kv, err := g.js.KeyValue(ctx, bus.BucketGate)
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	g.waits = &waits{kv: kv}
	// A decision recorded whose send failed goes out within seconds (and
	// at start, for one recorded before a stop).
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := g.sendUnsent(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("send recorded decisions", "err", err)
		}
	}, 5*time.Second)

	for _, stream := range []string{bus.StreamSteps, bus.StreamApprovals} {
		sub, err := g.dead.Watch(g.js.Conn(), stream)
		if err != nil {
			return fmt.Errorf("gate: %w", err)
		}
		defer sub.Unsubscribe()
	}
	steps, err := g.js.CreateOrUpdateConsumer(ctx, bus.StreamSteps, jetstream.ConsumerConfig{Durable: bus.ConsumerGate,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: bus.MaxDeliver})
	if err != nil {
		return fmt.Errorf("gate: steps consumer: %w", err)
	}
	g.consumers.Watch(steps)
	sc, err := bus.Consume(ctx, steps, g.log, g.handleStep)
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	defer sc.Stop()

	approvals, err := g.js.CreateOrUpdateConsumer(ctx, bus.StreamApprovals, jetstream.ConsumerConfig{
		Durable: bus.ConsumerGate, FilterSubject: bus.ApprovalsFilter, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxDeliver: bus.MaxDeliver,
	})
	if err != nil {
		return fmt.Errorf("gate: approvals consumer: %w", err)
	}
	g.consumers.Watch(approvals)
	ac, err := bus.Consume(ctx, approvals, g.log, g.handleApproval, bus.OnRejected(g.rejectedApproval))
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	defer ac.Stop()

	stopResumes, err := g.watchResumes(ctx)
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	defer stopResumes()

	errc := make(chan error, 1)
	webhook := "none"
	if ln != nil {
		if srv == nil {
			srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		}
		srv.Handler = g.Handler()
		webhook = ln.Addr().String()
		go func() {
			serve := func() error { return srv.Serve(ln) }
			if g.opts.TLSCert != "" || g.opts.TLSKey != "" {
				serve = func() error { return srv.ServeTLS(ln, g.opts.TLSCert, g.opts.TLSKey) }
			}
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("gate: webhook: %w", err)
			}
		}()
		defer srv.Shutdown(context.Background())
	}
	// CLI approvals trust the name a request carries: the hub must check it.
	if _, err := g.cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, admission.Name, metav1.GetOptions{}); err != nil {
		g.log.Warn("the hub lacks Flotilla's admission policy (deploy/admission): whoever may write an Application's status could approve in another's name", "policy", admission.Name, "err", err)
	}
	g.log.Info("gate running", "webhook", webhook, "identities", len(g.cfg.Identities))
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
