package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/deploy/crds"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// hub is the API server every test of this package shares; each test takes
// its own namespace, NATS server and gate.
var hub *testbed.Env

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		env, err := testbed.Start(ctx, testbed.Options{Clusters: []string{"unused"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer env.Stop()
		if err := crds.Install(ctx, env.Hub.Config); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		hub = env
		return m.Run()
	}()
	os.Exit(code)
}

// namespaces numbers the tests' namespaces.
var namespaces atomic.Int32

// patience bounds every wait for an end point (a loaded two-core machine).
const patience = 30 * time.Second

type fixture struct {
	t    *testing.T
	ctx  context.Context
	ns   string
	js   jetstream.JetStream
	dyn  dynamic.Interface
	cs   kubernetes.Interface
	url  string
	logs *logBook
	// secrets are the HMAC secrets of the gate's identities, by name.
	secrets map[string]string

	mu    sync.Mutex
	tails map[string]*bus.Tail
}

// start runs a gate with cfg for the test, in a new namespace named after
// ns on the hub (its Applications, RBAC and Events); prepare, if any, adjusts the gate first.
func start(t *testing.T, ns string, cfg *gate.Config, opts gate.Options, prepare ...func(*gate.Gate)) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the hub API server and NATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	ns = fmt.Sprintf("%s-%d", ns, namespaces.Add(1)) // run again (-count), the test takes a new one
	_, js := natstest.New(t).JetStream(t)
	// Every stream, as the planner, the dispatcher and the gate make them.
	if err := bus.Setup(ctx, js, bus.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, ns: ns, js: js, dyn: dynamic.NewForConfigOrDie(hub.Hub.Config), cs: kubernetes.NewForConfigOrDie(hub.Hub.Config),
		logs: &logBook{}, secrets: map[string]string{}, tails: map[string]*bus.Tail{}}
	for _, id := range cfg.Identities {
		f.secrets[id.Name] = id.HMACSecret
	}
	if _, err := f.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g, err := gate.New(f.dyn, f.cs, js, slog.New(f.logs), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prepare {
		p(g)
	}
	// The webhook's port is bound before the gate starts: nothing else can take it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.url = "http://" + ln.Addr().String()
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(gctx, ln, nil) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("gate: %v", err)
		}
	})
	return f
}

// ref is the first run of release <app>-v1, publishVersion v1, in the
// fixture's namespace.
func (f *fixture) ref(app string) events.AppRef {
	return events.AppRef{Namespace: f.ns, Application: app, UID: "uid-" + app, Release: app + "-v1", Revision: 1, PublishVersion: "v1"}
}

// suspension is the planner's event of step deploy-prod of app's release
// suspending for approval, with the step's properties.
func (f *fixture) suspension(app, props string) *events.Event {
	ref := f.ref(app)
	return events.New(events.StepEventID(ref, "deploy-prod", events.TypeStepSuspended), events.SourcePlanner, events.TypeStepSuspended, "",
		&events.StepData{AppRef: ref, Step: "deploy-prod", StepType: "deploy", Index: 1, Reason: "WaitingApproval", Properties: json.RawMessage(props)})
}

// publishStep publishes a step event as the planner does; it returns its
// sequence in the steps stream.
func (f *fixture) publishStep(e *events.Event) uint64 {
	f.t.Helper()
	ack, err := bus.Publish(f.ctx, f.js, bus.StepSubject(f.ns, e.Data.(*events.StepData).Application), e)
	if err != nil {
		f.t.Fatal(err)
	}
	return ack.Sequence
}

// hold suspends app's step and waits until the gate holds it (its approval
// request is out).
func (f *fixture) hold(app, props string) *events.ApprovalRequestedData {
	f.t.Helper()
	f.publishStep(f.suspension(app, props))
	return f.requested(app)
}

// requested waits for the gate's approval request of app.
func (f *fixture) requested(app string) *events.ApprovalRequestedData {
	f.t.Helper()
	evs := eventually.Value(f.t, patience, "the approval request of "+app, func() ([]*events.Event, error) {
		return f.events(bus.GateSubject("requested", f.ns, app))
	}, func(evs []*events.Event) bool { return len(evs) > 0 })
	return evs[0].Data.(*events.ApprovalRequestedData)
}

// settled waits until the gate acked every step event up to seq.
func (f *fixture) settled(seq uint64) {
	f.t.Helper()
	eventually.True(f.t, patience, fmt.Sprintf("the gate to settle step event %d", seq), func() (bool, error) {
		c, err := f.js.Consumer(f.ctx, bus.StreamSteps, bus.ConsumerGate)
		if err != nil {
			return false, err
		}
		info, err := c.Info(f.ctx)
		if err != nil {
			return false, err
		}
		return info.AckFloor.Stream >= seq, fmt.Errorf("acked up to %d", info.AckFloor.Stream)
	})
}

// events is every event published so far on subject (of the approvals stream).
func (f *fixture) events(subject string) ([]*events.Event, error) {
	f.mu.Lock()
	tl, ok := f.tails[subject]
	f.mu.Unlock()
	if !ok {
		var err error
		if tl, err = bus.NewTail(f.ctx, f.js, bus.StreamOf(subject), subject); err != nil {
			return nil, err
		}
		f.mu.Lock()
		f.tails[subject] = tl
		f.mu.Unlock()
	}
	return tl.Events()
}

// decisions are the decisions sent to the planner on app so far.
func (f *fixture) decisions(app string) []*events.Event {
	f.t.Helper()
	evs, err := f.events(bus.GateSubject("decisions", f.ns, app))
	if err != nil {
		f.t.Fatal(err)
	}
	return evs
}

// waitDecisions waits until n decisions on app were sent.
func (f *fixture) waitDecisions(app string, n int) []*events.Event {
	f.t.Helper()
	return eventually.Value(f.t, patience, fmt.Sprintf("%d decisions on %s", n, app), func() ([]*events.Event, error) {
		return f.events(bus.GateSubject("decisions", f.ns, app))
	}, func(evs []*events.Event) bool { return len(evs) >= n })
}

// audit waits for the audit record of decision id on app.
func (f *fixture) audit(app, id string) *events.ApprovalAuditData {
	f.t.Helper()
	return f.auditOn(bus.GateSubject("audit", f.ns, app), id)
}

// auditOn waits for the audit record of decision id on subject.
func (f *fixture) auditOn(subject, id string) *events.ApprovalAuditData {
	f.t.Helper()
	var found *events.ApprovalAuditData
	eventually.True(f.t, patience, "the audit record of "+id, func() (bool, error) {
		evs, err := f.events(subject)
		for _, e := range evs {
			if a := e.Data.(*events.ApprovalAuditData); a.EventID == id {
				found = a
				return true, nil
			}
		}
		return false, err
	})
	return found
}

// record is the gate's KV record of app's wait, as far as tests read it.
type record struct {
	Step      string            `json:"step"`
	Approvals []events.Approval `json:"approvals"`
	Decision  string            `json:"decision"`
	Sent      bool              `json:"sent"`
}

func (f *fixture) record(app string) record {
	f.t.Helper()
	kv, err := f.js.KeyValue(f.ctx, bus.BucketGate)
	if err != nil {
		f.t.Fatal(err)
	}
	entry, err := kv.Get(f.ctx, f.ns+"."+app)
	if err != nil {
		f.t.Fatalf("the wait of %s: %v", app, err)
	}
	var r record
	if err := json.Unmarshal(entry.Value(), &r); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// approval is the JSON data of an approval of app's step deploy-prod of v1.
func (f *fixture) approval(app, decision, approver string) []byte {
	body, _ := json.Marshal(events.ApprovalData{Namespace: f.ns, Application: app, Release: app + "-v1", PublishVersion: "v1", Step: "deploy-prod", Decision: decision, Approver: approver, Reason: "checked"})
	return body
}

// post sends body to the webhook signed by identity who, with a fresh
// ce-id, and headers on top; it returns the status and the JSON answer.
func (f *fixture) post(who string, body []byte, headers map[string]string) (int, map[string]string) {
	f.t.Helper()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	id := fmt.Sprint(time.Now().UnixNano())
	if v, ok := headers["ce-id"]; ok {
		id = v // signed as sent
	}
	req, _ := http.NewRequestWithContext(f.ctx, http.MethodPost, f.url+"/v1/approvals", bytes.NewReader(body))
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-type": events.TypeApproval, "ce-source": "/test", "ce-id": id,
		"Content-Type": "application/json", gate.HTTPHeaderKeyID: who, gate.HTTPHeaderTimestamp: ts, gate.HTTPHeaderSignature: gate.SignHTTP(f.secrets[who], ts, id, body)} {
		req.Header.Set(k, v)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&a)
	return resp.StatusCode, a
}

// approve posts who's decision on app's step, as who.
func (f *fixture) approve(who, app, decision string) int {
	f.t.Helper()
	code, _ := f.post(who, f.approval(app, decision, who), nil)
	return code
}

// metrics is the gate's /metrics page.
func (f *fixture) metrics() string {
	f.t.Helper()
	resp, err := http.Get(f.url + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m bytes.Buffer
	_, _ = m.ReadFrom(resp.Body)
	return m.String()
}
