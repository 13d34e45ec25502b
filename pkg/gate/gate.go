// Package gate owns the gate service: it holds manual workflow steps
// (deploy with auto: false, suspend without duration), tells bots what
// waits, takes decisions over NATS (NKey-signed CloudEvents), HTTP (the
// CloudEvents HTTP binding, HMAC-signed) and the CLI (a resume request on
// the Application's status, which needs RBAC), binds each decision to one
// application, release and step, audits every decision, and tells the
// planner when a step may go on or must fail.
package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/flotilla-dev/flotilla/deploy/admission"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
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
	// Config is the trust configuration file (identities, keys, secrets).
	Config string
	// Listen is the webhook's address.
	Listen string
	// Instruments record the gate's spans and metrics; the webhook's
	// /metrics serves Instruments.Metrics when it is a Gatherer too.
	Instruments telemetry.Instruments
}

// BindFlags binds the gate's flags.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Config, "config", "", "trust configuration: identities with NKeys, HMAC secrets, groups (YAML)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8085", "address of the approval webhook (POST /v1/approvals)")
}

// Gate is one gate replica.
type Gate struct {
	cfg  *Config
	log  *slog.Logger
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	dyn  dynamic.Interface
	cs   kubernetes.Interface
	now  func() time.Time
	opts Options

	metrics   prometheus.Gatherer
	decisions *prometheus.CounterVec
	wait      *prometheus.HistogramVec
	consumers *bus.ConsumerMetrics
	tracer    trace.Tracer
}

// New builds a gate.
func New(restCfg *rest.Config, js jetstream.JetStream, log *slog.Logger, cfg *Config, opts Options) (*Gate, error) {
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("gate: hub client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("gate: hub client: %w", err)
	}
	if cfg == nil {
		cfg = &Config{}
	}
	g := &Gate{cfg: cfg, log: log, js: js, dyn: dyn, cs: cs, now: time.Now, opts: opts, tracer: opts.Instruments.T(), consumers: bus.NewConsumerMetrics()}
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
	if err := ins.Register(g.decisions, g.wait, g.consumers); err != nil {
		return nil, fmt.Errorf("gate: %w", err)
	}
	return g, nil
}

// Run serves until ctx ends; srv, when not nil, serves the webhook.
func (g *Gate) Run(ctx context.Context, srv *http.Server) error {
	if err := bus.Setup(ctx, g.js, bus.SetupOptions{}); err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	var err error
	if g.kv, err = g.js.KeyValue(ctx, bus.BucketGate); err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	// A decision recorded whose send failed goes out within seconds (and
	// at start, for one recorded before a stop).
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := g.sendUnsent(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("send recorded decisions", "err", err)
		}
	}, 5*time.Second)
	steps, err := g.js.CreateOrUpdateConsumer(ctx, bus.StreamSteps, jetstream.ConsumerConfig{Durable: bus.ConsumerGate, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
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
	})
	if err != nil {
		return fmt.Errorf("gate: approvals consumer: %w", err)
	}
	g.consumers.Watch(approvals)
	ac, err := approvals.Consume(func(m jetstream.Msg) { g.handleNATS(ctx, m) })
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	defer ac.Stop()

	factory := dynamicinformer.NewDynamicSharedInformerFactory(g.dyn, 0)
	inf := factory.ForResource(v1beta1.ApplicationResource).Informer()
	onApp := func(obj any) { g.handleResume(ctx, obj) }
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onApp, UpdateFunc: func(_, o any) { onApp(o) }}); err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return errors.New("gate: Application cache did not sync")
	}

	errc := make(chan error, 1)
	if srv != nil {
		srv.Handler = g.Handler()
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("gate: webhook: %w", err)
			}
		}()
		defer srv.Shutdown(context.Background())
	}
	// CLI approvals trust the name a request carries: the hub must check it.
	if _, err := g.cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, admission.Name, metav1.GetOptions{}); err != nil {
		g.log.Warn("the hub lacks Flotilla's admission policy (deploy/admission): whoever may write an Application's status could approve in another's name", "policy", admission.Name, "err", err)
	}
	g.log.Info("gate running", "webhook", g.opts.Listen, "identities", len(g.cfg.Identities))
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// waiting is a step held for a decision, stored in the gate's KV bucket.
type waiting struct {
	events.AppRef
	Step         string            `json:"step"`
	StepType     string            `json:"stepType"`
	Approvers    []string          `json:"approvers,omitempty"`
	MinApprovals int               `json:"minApprovals"`
	Approvals    []events.Approval `json:"approvals,omitempty"`
	// Decision is set once the step is decided: the event type (step
	// approved or rejected); Reason is the deciding one's reason. Sent is
	// set once the decision went to the planner.
	Decision string `json:"decision,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Sent     bool   `json:"sent,omitempty"`
	// Link is the deciding request's own traceparent (a bot's), if any.
	Link string `json:"link,omitempty"`
	// Seen are the IDs of every decision event counted or refused as a replay.
	Seen []string `json:"seen,omitempty"`
	// Requested is when the step began to wait; TraceParent and TraceState
	// are its step's trace context, so the wait's span joins the release's
	// trace however late the decision comes.
	Requested   time.Time `json:"requested,omitzero"`
	TraceParent string    `json:"traceparent,omitempty"`
	TraceState  string    `json:"tracestate,omitempty"`
}

type stepProps struct {
	Approvers    []string `json:"approvers"`
	MinApprovals int      `json:"minApprovals"`
}

func key(ns, app string) string { return ns + "." + app }

// handleStep holds manual steps when they suspend and lets them go when
// they move on.
func (g *Gate) handleStep(ctx context.Context, e *events.Event) error {
	d, ok := e.Data.(*events.StepData)
	if !ok {
		return nil
	}
	entry, err := g.kv.Get(ctx, key(d.Namespace, d.Application))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	var existing *waiting
	if entry != nil {
		existing = &waiting{}
		if json.Unmarshal(entry.Value(), existing) != nil {
			existing = nil
		}
	}
	if e.Type != events.TypeStepSuspended || d.Reason != "WaitingApproval" {
		// The step (or a newer run) moved on: nothing waits any more.
		if existing != nil && (existing.olderRun(d.AppRef) || existing.sameRun(d.AppRef) && existing.Step == d.Step) {
			return g.endWait(ctx, entry.Revision(), existing, "no decision: step "+d.Step+" of "+d.Release+" "+events.Verb(e.Type))
		}
		return nil
	}
	switch {
	case existing != nil && existing.sameRun(d.AppRef) && existing.Step == d.Step:
		// A redelivered suspension: the wait, and any decision on it, stand;
		// only the request goes out again (its fixed ID drops a repeat).
		return g.request(ctx, e, d, existing)
	case existing != nil && !existing.olderRun(d.AppRef) && !existing.sameRun(d.AppRef):
		return nil // a late suspension of a run since replaced
	}
	var p stepProps
	if len(d.Properties) > 0 {
		if err := json.Unmarshal(d.Properties, &p); err != nil {
			// The planner validates these; should one slip through, nobody may
			// approve rather than anybody.
			g.log.Error("step properties unreadable: holding the step for nobody", "app", d.Namespace+"/"+d.Application, "step", d.Step, "err", err)
			p = stepProps{Approvers: []string{"(unreadable approvers property)"}}
		}
	}
	w := waiting{AppRef: d.AppRef, Step: d.Step, StepType: d.StepType, Approvers: p.Approvers, MinApprovals: max(p.MinApprovals, 1),
		Requested: g.now().UTC(), TraceParent: e.TraceParent, TraceState: e.TraceState}
	data, _ := json.Marshal(w)
	if entry == nil {
		_, err = g.kv.Create(ctx, key(d.Namespace, d.Application), data)
	} else {
		_, err = g.kv.Update(ctx, key(d.Namespace, d.Application), data, entry.Revision())
	}
	if err != nil {
		return bus.Retry(100*time.Millisecond, fmt.Errorf("hold step %s of %s: %w", d.Step, d.Release, err))
	}
	return g.request(ctx, e, d, &w)
}

func (w *waiting) decided() bool { return w.Decision != "" }

// olderRun says whether w waits in a run older than ref's (release, then attempt).
func (w *waiting) olderRun(ref events.AppRef) bool {
	return w.Revision < ref.Revision || w.Revision == ref.Revision && w.Attempt < ref.Attempt
}

func (w *waiting) sameRun(ref events.AppRef) bool {
	return w.UID == ref.UID && w.Revision == ref.Revision && w.Attempt == ref.Attempt
}

// endWait removes a wait whose step moved on, recording its span when it
// ended undecided; a record changed meanwhile is read again.
func (g *Gate) endWait(ctx context.Context, rev uint64, w *waiting, why string) error {
	k := key(w.Namespace, w.Application)
	for range 5 {
		err := g.kv.Delete(ctx, k, jetstream.LastRevision(rev))
		if err == nil {
			if !w.decided() {
				g.traceWait(ctx, w, "", why)
			}
			return nil
		}
		entry, gerr := g.kv.Get(ctx, k)
		if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return nil
		}
		if gerr != nil {
			return gerr
		}
		var fresh waiting
		if json.Unmarshal(entry.Value(), &fresh) != nil || !fresh.sameRun(w.AppRef) || fresh.Step != w.Step {
			return nil // a newer wait took its place
		}
		*w, rev = fresh, entry.Revision()
	}
	return bus.Retry(time.Second, fmt.Errorf("end the wait of %s/%s: too many concurrent changes", w.Namespace, w.Application))
}

// request tells bots what w waits for.
func (g *Gate) request(ctx context.Context, e *events.Event, d *events.StepData, w *waiting) error {
	req := &events.ApprovalRequestedData{AppRef: d.AppRef, Step: d.Step, StepType: d.StepType, Message: d.Message, Policies: d.Policies,
		Approvers: w.Approvers, MinApprovals: w.MinApprovals, Objects: summarize(g.snapshotObjects(ctx, d.Snapshot))}
	re := events.New(fmt.Sprintf("%s.%s.approval-requested", events.RunID(d.AppRef), d.Step), events.SourceGate, events.TypeApprovalRequested, d.Namespace+"/"+d.Application, req)
	re.TraceParent, re.TraceState = telemetry.Inject(trace.ContextWithSpanContext(ctx, w.waitContext()))
	if _, err := bus.Publish(ctx, g.js, bus.GateSubject("requested", d.Namespace, d.Application), re); err != nil {
		return err
	}
	g.log.InfoContext(telemetry.Extract(ctx, e.TraceParent, e.TraceState), "step waits for approval", "app", d.Namespace+"/"+d.Application, "release", d.Release, "step", d.Step, "approvers", w.Approvers, "min_approvals", w.MinApprovals)
	return nil
}

// snapshotObjects is s with its objects inline: a large snapshot is read
// from the object store, so approvers see what they approve. Unreadable,
// the request goes out without the list (the step still waits).
func (g *Gate) snapshotObjects(ctx context.Context, s *events.Snapshot) *events.Snapshot {
	if s == nil || len(s.Objects) > 0 || s.ObjectStore == "" {
		return s
	}
	objects, err := g.readSnapshot(ctx, s)
	if err != nil {
		g.log.WarnContext(ctx, "approval request without its objects: snapshot unreadable", "snapshot", s.ObjectStore, "err", err)
		return s
	}
	return &events.Snapshot{Digest: s.Digest, Objects: objects}
}

// readSnapshot reads a snapshot by name, if its digest vouches for it:
// approvers see what will be deployed, or nothing.
func (g *Gate) readSnapshot(ctx context.Context, s *events.Snapshot) ([]json.RawMessage, error) {
	store, err := bus.Snapshots(ctx, g.js)
	if err != nil {
		return nil, err
	}
	return snapshot.Open(ctx, store, s)
}

// summarize lists a snapshot's objects with their container images.
func summarize(s *events.Snapshot) []events.ObjectSummary {
	if s == nil {
		return nil
	}
	var out []events.ObjectSummary
	for _, raw := range s.Objects {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			continue
		}
		sum := events.ObjectSummary{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Name: u.GetName()}
		for _, path := range [][]string{{"spec", "template", "spec", "containers"}, {"spec", "containers"}, {"spec", "jobTemplate", "spec", "template", "spec", "containers"}} {
			cs, _, _ := unstructured.NestedSlice(u.Object, path...)
			for _, c := range cs {
				m, _ := c.(map[string]any)
				if img, ok := m["image"].(string); ok {
					sum.Images = append(sum.Images, img)
				}
			}
		}
		out = append(out, sum)
	}
	return out
}

// Refusal is a decision the gate did not count, with the HTTP-style code.
type Refusal struct {
	Code   int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

func refuse(code int, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// decide counts one authenticated decision, or refuses it. who and groups
// are the authenticated identity; the recorded approver is who, or the
// event's approver for a delegate (a bot naming the person).
func (g *Gate) decide(ctx context.Context, id string, d *events.ApprovalData, via, who string, groups []string, delegate bool, traceParent string) error {
	approver := who
	if delegate {
		approver, groups = d.Approver, nil
	}
	err := g.record(ctx, id, d, via, approver, groups, traceParent)
	g.audit(ctx, id, d, via, approver, err)
	return err
}

func (g *Gate) record(ctx context.Context, id string, d *events.ApprovalData, via, approver string, groups []string, traceParent string) error {
	for attempt := 0; attempt < 5; attempt++ {
		entry, err := g.kv.Get(ctx, key(d.Namespace, d.Application))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return refuse(http.StatusNotFound, "no step of application %s/%s waits for a decision", d.Namespace, d.Application)
		}
		if err != nil {
			return err
		}
		var w waiting
		if err := json.Unmarshal(entry.Value(), &w); err != nil {
			return err
		}
		if w.decided() && !w.Sent {
			// Decided, but the send failed: send it now (the refusal below stands).
			if err := g.send(ctx, &w, entry.Revision()); err != nil {
				return err
			}
		}
		switch {
		case slices.Contains(w.Seen, id):
			return refuse(http.StatusConflict, "decision %s was already received (replay)", id)
		case d.PublishVersion != w.PublishVersion && d.PublishVersion != w.Release:
			return refuse(http.StatusConflict, "stale: %s/%s waits on publishVersion %q, not %q", d.Namespace, d.Application, w.PublishVersion, d.PublishVersion)
		case w.Step != d.Step:
			return refuse(http.StatusConflict, "stale: step %q does not wait; %q does", d.Step, w.Step)
		case w.decided():
			return refuse(http.StatusConflict, "step %q of %s was already decided", d.Step, w.Release)
		case !allowed(w.Approvers, approver, groups):
			return refuse(http.StatusForbidden, "%s may not decide step %q (approvers: %v)", approver, d.Step, w.Approvers)
		}
		w.Seen = append(w.Seen, id)
		distinct := slices.ContainsFunc(w.Approvals, func(a events.Approval) bool { return a.Approver == approver && a.Decision == d.Decision })
		if !distinct {
			w.Approvals = append(w.Approvals, events.Approval{Approver: approver, Decision: d.Decision, Via: via, Reason: d.Reason, Time: g.now().UTC(), EventID: id})
		}
		approvals := 0
		for _, a := range w.Approvals {
			if a.Decision == events.DecisionApprove {
				approvals++
			}
		}
		typ := ""
		switch {
		case d.Decision == events.DecisionReject:
			typ = events.TypeStepRejected
		case approvals >= w.MinApprovals:
			typ = events.TypeStepApproved
		}
		w.Decision, w.Reason, w.Link = typ, d.Reason, traceParent
		// Recorded first, sent second: of two decisions racing on the last
		// approval only the one whose record lands goes to the planner, so
		// the record and the planner never disagree. A failed send leaves
		// the decision recorded and unsent; the next decision on the step,
		// or the gate's next start, sends it (its fixed ID drops repeats).
		data, _ := json.Marshal(w)
		rev, err := g.kv.Update(ctx, key(d.Namespace, d.Application), data, entry.Revision())
		if err != nil {
			continue // another decision landed first: read again
		}
		if typ != "" {
			if err := g.send(ctx, &w, rev); err != nil {
				// Recorded all the same: the gate sends it again shortly.
				g.log.WarnContext(telemetry.Extract(ctx, w.TraceParent, w.TraceState), "decision recorded, not yet sent", "app", d.Namespace+"/"+d.Application, "err", err)
			}
		}
		g.log.InfoContext(telemetry.Extract(ctx, w.TraceParent, w.TraceState), "decision recorded", "app", d.Namespace+"/"+d.Application, "release", w.Release, "step", w.Step, "approver", approver, "via", via, "decision", d.Decision, "approvals", approvals, "min", w.MinApprovals, "final", typ != "")
		return nil
	}
	return refuse(http.StatusConflict, "too many concurrent decisions on %s/%s: try again", d.Namespace, d.Application)
}

// send publishes w's decision to the planner and marks it sent (rev is
// the record's revision; losing that write to a newer one only means a
// later repeat, which the fixed event ID drops).
func (g *Gate) send(ctx context.Context, w *waiting, rev uint64) error {
	dec := &events.StepDecisionData{AppRef: w.AppRef, Step: w.Step, Approvals: w.Approvals, Reason: w.Reason}
	de := events.New(fmt.Sprintf("%s.%s.decided", events.RunID(w.AppRef), w.Step), events.SourceGate, w.Decision, w.Namespace+"/"+w.Application, dec)
	de.TraceParent, de.TraceState = telemetry.Inject(trace.ContextWithSpanContext(ctx, w.waitContext()))
	ack, err := bus.Publish(ctx, g.js, bus.GateSubject("decisions", w.Namespace, w.Application), de)
	if err != nil {
		return fmt.Errorf("send the decision on %s/%s: %w", w.Namespace, w.Application, err)
	}
	w.Sent = true
	data, _ := json.Marshal(w)
	_, _ = g.kv.Update(ctx, key(w.Namespace, w.Application), data, rev)
	if ack.Duplicate {
		return nil // sent before (a resend racing the first): its wait is recorded
	}
	decision := events.DecisionApprove
	if w.Decision == events.TypeStepRejected {
		decision = events.DecisionReject
	}
	g.traceWait(ctx, w, decision, "")
	return nil
}

// sendUnsent sends decisions recorded but not sent (the gate stopped, or
// NATS failed, in between).
func (g *Gate) sendUnsent(ctx context.Context) error {
	lister, err := g.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list waiting steps: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		entry, err := g.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var w waiting
		if json.Unmarshal(entry.Value(), &w) != nil || !w.decided() || w.Sent {
			continue
		}
		if err := g.send(ctx, &w, entry.Revision()); err != nil {
			g.log.Warn("send a recorded decision", "app", w.Namespace+"/"+w.Application, "err", err)
			continue
		}
		g.log.Info("sent a decision recorded before", "app", w.Namespace+"/"+w.Application, "release", w.Release, "step", w.Step)
	}
	return nil
}

// audit records every decision, accepted or refused, as an event and as a
// Kubernetes Event on the Application.
func (g *Gate) audit(ctx context.Context, id string, d *events.ApprovalData, via, approver string, err error) {
	a := &events.ApprovalAuditData{Via: via, EventID: id, Accepted: err == nil, Code: http.StatusAccepted}
	if d != nil {
		a.ApprovalData = *d
	}
	if approver != "" {
		a.Approver = approver
	}
	var r *Refusal
	switch {
	case errors.As(err, &r):
		a.Code, a.Reason = r.Code, r.Reason
	case err != nil:
		a.Code, a.Reason = http.StatusInternalServerError, err.Error()
	}
	g.decisions.WithLabelValues(via, outcome(a.Code)).Inc()
	ns, app := "unknown", "unknown"
	if d != nil && d.Namespace != "" && d.Application != "" {
		ns, app = d.Namespace, d.Application
	}
	ae := events.New(fmt.Sprintf("audit.%s.%d", id, g.now().UnixNano()), events.SourceGate, events.TypeApprovalAudit, ns+"/"+app, a)
	if _, perr := bus.Publish(ctx, g.js, bus.GateSubject("audit", ns, app), ae); perr != nil {
		g.log.Warn("audit", "err", perr)
	}
	if !a.Accepted {
		g.log.Info("decision refused", "app", ns+"/"+app, "via", via, "approver", a.Approver, "code", a.Code, "reason", a.Reason)
	}
	// Unauthenticated callers get an audit record, not an Event on an
	// Application they name.
	if ns == "unknown" || a.Code == http.StatusUnauthorized || a.Code == http.StatusRequestEntityTooLarge {
		return
	}
	u, gerr := g.dyn.Resource(v1beta1.ApplicationResource).Namespace(ns).Get(ctx, app, metav1.GetOptions{})
	if gerr != nil {
		return
	}
	evType, reason, msg := corev1.EventTypeNormal, "ApprovalRecorded", fmt.Sprintf("%s %ss step %q via %s", a.Approver, d.Decision, d.Step, via)
	if !a.Accepted {
		evType, reason, msg = corev1.EventTypeWarning, "ApprovalRefused", fmt.Sprintf("%s's %s of step %q via %s refused (%d): %s", a.Approver, d.Decision, d.Step, via, a.Code, a.Reason)
	}
	now := metav1.NewTime(g.now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: app + ".", Namespace: ns, Annotations: map[string]string{v1beta1.AnnotationDecisionID: id}},
		InvolvedObject: corev1.ObjectReference{APIVersion: v1beta1.GroupVersion.String(), Kind: "Application", Namespace: ns, Name: app, UID: u.GetUID()},
		Reason:         reason, Message: msg, Type: evType, Source: corev1.EventSource{Component: "flotilla-gate"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := g.cs.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		g.log.Warn("kubernetes event", "err", err)
	}
}

// handleNATS takes a signed approval event from the approvals stream.
func (g *Gate) handleNATS(ctx context.Context, m jetstream.Msg) {
	msg := &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
	id := msg.Header.Get(events.HeaderID)
	e, err := events.Decode(msg)
	if err == nil && e.Type != events.TypeApproval {
		err = fmt.Errorf("%w: type %s is not %s", events.ErrInvalid, e.Type, events.TypeApproval)
	}
	if err != nil {
		g.audit(ctx, orText(id, "malformed"), nil, ViaNATS, "", refuse(http.StatusUnprocessableEntity, "malformed approval: %v", err))
		_ = m.TermWithReason(err.Error())
		return
	}
	ident, err := g.cfg.verifyNATS(msg)
	d := e.Data.(*events.ApprovalData)
	if err != nil {
		g.audit(ctx, e.ID, d, ViaNATS, "", refuse(http.StatusUnauthorized, "%v", err))
		_ = m.TermWithReason(err.Error())
		return
	}
	// The signature covers ce-time: an old signed approval republished later
	// is stale. Judge it by when NATS stored it, so a gate that was down
	// still counts approvals sent meanwhile.
	stored := g.now()
	if md, err := m.Metadata(); err == nil {
		stored = md.Timestamp
	}
	if skew := stored.Sub(e.Time); skew > MaxSkew || skew < -MaxSkew {
		err := refuse(http.StatusUnauthorized, "ce-time is %v off the gate's clock (at most %v)", skew.Round(time.Second), MaxSkew)
		g.audit(ctx, e.ID, d, ViaNATS, ident.Name, err)
		_ = m.TermWithReason(err.Reason)
		return
	}
	if err := g.decide(ctx, e.ID, d, ViaNATS, ident.Name, ident.Groups, ident.Delegate, e.TraceParent); err != nil {
		var r *Refusal
		if !errors.As(err, &r) {
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.TermWithReason(r.Reason)
		return
	}
	_ = m.Ack()
}

// handleResume honours a `kubectl flotilla workflow resume` request written
// on the Application's status: the hub's RBAC authenticated the writer.
func (g *Gate) handleResume(ctx context.Context, obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	raw, found, _ := unstructured.NestedMap(u.Object, "status", "workflow", "resume")
	if !found {
		return
	}
	var req v1beta1.ResumeRequest
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &req); err != nil || req.ID == "" || req.User == "" {
		return
	}
	d := &events.ApprovalData{Namespace: u.GetNamespace(), Application: u.GetName(), PublishVersion: u.GetAnnotations()[v1beta1.AnnotationPublishVersion],
		Step: req.Step, Decision: orText(req.Decision, events.DecisionApprove), Approver: req.User, Reason: req.Reason}
	// Informers see the request on every status write until the step moves:
	// count it once, quietly.
	entry, err := g.kv.Get(ctx, key(d.Namespace, d.Application))
	if err != nil {
		return
	}
	var w waiting
	if json.Unmarshal(entry.Value(), &w) != nil || slices.Contains(w.Seen, "cli."+req.ID) || w.decided() {
		return
	}
	if req.Release != "" {
		d.PublishVersion = req.Release // the release the requester saw waiting
	} else if d.PublishVersion == "" {
		d.PublishVersion = w.Release // without the annotation, the release binds it
	}
	// The request names its writer; check that this identity may indeed
	// update the Application's status, as the request's write required.
	if err := g.mayUpdateStatus(ctx, req.User, req.Groups, d.Namespace, d.Application); err != nil {
		g.audit(ctx, "cli."+req.ID, d, ViaCLI, req.User, err)
		return
	}
	_ = g.decide(ctx, "cli."+req.ID, d, ViaCLI, req.User, req.Groups, false, "")
}

func (g *Gate) mayUpdateStatus(ctx context.Context, user string, groups []string, ns, app string) error {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: v1beta1.GroupVersion.Group,
			Resource: "applications", Subresource: "status", Name: app},
	}}
	res, err := g.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if !res.Status.Allowed {
		return refuse(http.StatusForbidden, "%s may not update applications/status of %s/%s, so may not resume it", user, ns, app)
	}
	return nil
}

// outcome is a bounded label for a decision's answer.
func outcome(code int) string {
	switch code {
	case http.StatusAccepted:
		return "recorded"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_waiting"
	case http.StatusConflict:
		return "stale_or_replayed"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnprocessableEntity:
		return "malformed"
	}
	return "error"
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
