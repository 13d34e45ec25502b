package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/jaeger"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Services whose spans every release's trace holds.
var services = []string{"flotilla-planner", "flotilla-dispatcher", "flotilla-gate", "flotilla-cluster-agent"}

// releaseTrace waits until Jaeger holds the whole trace of an application's
// release (its root span is made when the release ends) and returns it.
func (s *suite) releaseTrace(t *testing.T, app string, revision int64, until func(*jaeger.Trace) bool) *jaeger.Trace {
	t.Helper()
	uid := s.must("kubectl", "get", "app", app, "-n", "demo", "-o", "jsonpath={.metadata.uid}")
	tid := telemetry.ReleaseTraceID(uid, revision).String()
	client := jaeger.New(s.env.JaegerURL)
	deadline := time.Now().Add(45 * time.Second)
	for {
		tr, err := client.Trace(s.ctx, tid)
		if err == nil && until(tr) {
			return tr
		}
		if time.Now().After(deadline) {
			if tr != nil {
				data, _ := json.MarshalIndent(tr, "", " ")
				t.Logf("trace so far:\n%s", data)
			}
			t.Fatalf("trace %s of %s release %d never complete in Jaeger (last error: %v)", tid, app, revision, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func hasRoot(tr *jaeger.Trace) bool {
	return slices.ContainsFunc(tr.Spans, func(sp jaeger.Span) bool { return sp.OperationName == "release" })
}

// complete says whether the trace has its root, a span of every service
// and every span's parent: each service exports on its own schedule (and
// an exporter retrying after a failed export holds its later spans back).
func complete(tr *jaeger.Trace) bool {
	if !hasRoot(tr) {
		return false
	}
	for _, svc := range services {
		if !slices.ContainsFunc(tr.Spans, func(sp jaeger.Span) bool { return tr.Service(&sp) == svc }) {
			return false
		}
	}
	for i := range tr.Spans {
		if sp := &tr.Spans[i]; sp.OperationName != "release" && tr.Parent(sp) == nil {
			return false
		}
	}
	return true
}

// only returns the one span of the trace that matches, failing otherwise.
func only(t *testing.T, tr *jaeger.Trace, what string, match func(*jaeger.Span) bool) *jaeger.Span {
	t.Helper()
	var found []*jaeger.Span
	for i := range tr.Spans {
		if match(&tr.Spans[i]) {
			found = append(found, &tr.Spans[i])
		}
	}
	if len(found) != 1 {
		var ops []string
		for _, sp := range tr.Spans {
			ops = append(ops, tr.Service(&sp)+":"+sp.OperationName)
		}
		t.Fatalf("%d spans are %s, want 1; the trace holds %v", len(found), what, ops)
	}
	return found[0]
}

func op(tr *jaeger.Trace, service, name string, attrs ...string) func(*jaeger.Span) bool {
	return func(sp *jaeger.Span) bool {
		if tr.Service(sp) != service || sp.OperationName != name {
			return false
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if v, _ := tr.Attr(sp, attrs[i]); v != attrs[i+1] {
				return false
			}
		}
		return true
	}
}

func childOf(t *testing.T, tr *jaeger.Trace, child, parent *jaeger.Span) {
	t.Helper()
	if child.ParentID() != parent.SpanID {
		p := tr.Parent(child)
		got := "none"
		if p != nil {
			got = tr.Service(p) + ":" + p.OperationName
		}
		t.Errorf("%s:%s has parent %s, want %s:%s", tr.Service(child), child.OperationName, got, tr.Service(parent), parent.OperationName)
	}
}

// checkSeedTrace asserts the first release's trace: one trace holding the
// four services and both clusters, shaped as the release ran.
func (s *suite) checkSeedTrace(t *testing.T, testC, prodC, approver string) {
	tr := s.releaseTrace(t, "demo", 1, func(tr *jaeger.Trace) bool {
		if !complete(tr) {
			return false
		}
		// Late spans (the healthy waits, the last reports) may trail the root.
		n := 0
		for _, sp := range tr.Spans {
			if sp.OperationName == "wait healthy" {
				n++
			}
		}
		return n >= 2
	})
	t.Logf("release 1 is trace %s: %d spans", tr.TraceID, len(tr.Spans))
	var seen []string
	clusters := map[string]bool{}
	for i := range tr.Spans {
		sp := &tr.Spans[i]
		if svc := tr.Service(sp); !slices.Contains(seen, svc) {
			seen = append(seen, svc)
		}
		if c, ok := tr.Attr(sp, "flotilla.cluster"); ok && tr.Service(sp) == "flotilla-cluster-agent" {
			clusters[c] = true
		}
		// One trace, whole: every span but the root hangs under a span of it.
		if sp.OperationName != "release" && tr.Parent(sp) == nil {
			t.Errorf("%s:%s has no parent in the trace (parent ID %q)", tr.Service(sp), sp.OperationName, sp.ParentID())
		}
	}
	for _, svc := range services {
		if !slices.Contains(seen, svc) {
			t.Errorf("no span of %s in the release's trace (services: %v)", svc, seen)
		}
	}
	if !clusters[testC] || !clusters[prodC] {
		t.Errorf("agent spans from clusters %v, want %s and %s", clusters, testC, prodC)
	}

	root := only(t, tr, "the release", op(tr, "flotilla-planner", "release",
		"flotilla.application", "demo", "k8s.namespace.name", "demo", "flotilla.publish_version", "version1", "flotilla.release", "demo-v1", "flotilla.phase", "succeeded"))
	if root.ParentID() != "" {
		t.Errorf("the release span has a parent: %s", root.ParentID())
	}
	for _, step := range []struct{ name, cluster string }{{"deploy-test", testC}, {"deploy-prod", prodC}} {
		st := only(t, tr, "step "+step.name, op(tr, "flotilla-planner", "step "+step.name, "flotilla.phase", "succeeded"))
		childOf(t, tr, st, root)
		disp := only(t, tr, "dispatch "+step.name, op(tr, "flotilla-dispatcher", "dispatch "+step.name))
		childOf(t, tr, disp, st)
		send := only(t, tr, "work sent to "+step.cluster, op(tr, "flotilla-dispatcher", "send work", "flotilla.cluster", step.cluster))
		childOf(t, tr, send, disp)
		work := only(t, tr, "the apply in "+step.cluster, op(tr, "flotilla-cluster-agent", "apply release", "flotilla.cluster", step.cluster))
		childOf(t, tr, work, send)
		childOf(t, tr, only(t, tr, "the Deployment's apply in "+step.cluster, op(tr, "flotilla-cluster-agent", "apply Deployment", "flotilla.cluster", step.cluster)), work)
		childOf(t, tr, only(t, tr, "the wait until healthy in "+step.cluster, op(tr, "flotilla-cluster-agent", "wait healthy", "flotilla.cluster", step.cluster)), work)
		// The planner handled the cluster's reports under the work's span.
		reports := 0
		for _, c := range tr.Children(work) {
			if tr.Service(c) == "flotilla-planner" && c.OperationName == "handle status" {
				reports++
			}
		}
		if reports == 0 {
			t.Errorf("no planner span handles %s's report under its work span", step.cluster)
		}
		if step.name == "deploy-prod" {
			wait := only(t, tr, "the wait for approval", op(tr, "flotilla-gate", "wait for approval",
				"flotilla.approver", approver, "flotilla.approval.channel", "cli", "flotilla.approval.decision", "approve"))
			childOf(t, tr, wait, st)
			if wait.Duration() <= 0 || wait.Start().Before(st.Start()) {
				t.Errorf("the wait for approval spans %v from %v; its step starts %v", wait.Duration(), wait.Start(), st.Start())
			}
			childOf(t, tr, only(t, tr, "the planner's handling of the decision", op(tr, "flotilla-planner", "handle decision")), wait)
		}
	}

	// Jaeger's search finds it by any of the services.
	found, err := jaeger.New(s.env.JaegerURL).Find(s.ctx, "flotilla-gate", time.Hour, 50)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(found, func(x jaeger.Trace) bool { return x.TraceID == tr.TraceID }) {
		t.Errorf("searching flotilla-gate's traces does not find %s", tr.TraceID)
	}

	// The CLI prints it as a timeline: the latest release by default.
	if latest := s.must("kubectl", "flotilla", "trace", "demo", "-n", "demo"); !strings.Contains(latest, tr.TraceID) {
		t.Errorf("kubectl flotilla trace demo -n demo does not print release 1's trace:\n%s", latest)
	}
	out := s.must("kubectl", "flotilla", "trace", "demo", "-n", "demo", "--release", "1")
	for _, want := range []string{tr.TraceID, "flotilla-planner", "release", "step deploy-prod", "wait for approval", approver, testC, prodC, "apply Deployment"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl flotilla trace lacks %q:\n%s", want, out)
		}
	}
	t.Logf("kubectl flotilla trace demo -n demo --release 1:\n%s", out)
}

// checkSecretStaysOut rolls out an application holding a Secret and
// asserts its value appears in no span of any service.
func (s *suite) checkSecretStaysOut(t *testing.T, prodC string) {
	value := fmt.Sprintf("s3cr3t-%d", time.Now().UnixNano())
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: db-credentials
  namespace: demo
stringData:
  password: %s
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: vault
  namespace: demo
  annotations:
    app.oam.dev/publishVersion: v1
spec:
  components:
    - name: vault
      type: ref-objects
      properties:
        objects:
          - apiVersion: v1
            kind: Secret
            name: db-credentials
  workflow:
    ref: deploy-demo
`, value)
	s.must("kubectl", "apply", "-f", writeFile(t, s.dir, "vault.yaml", manifest))
	s.eventually(`workflowSuspending`, "kubectl", "get", "app", "vault", "-n", "demo")
	s.must("kubectl", "flotilla", "workflow", "resume", "vault", "-n", "demo")
	s.eventually(`vault +vault +ref-objects +running +true`, "kubectl", "get", "app", "vault", "-n", "demo")
	s.eventually(`db-credentials`, "kubectl", "flotilla", "get", "secret", "db-credentials", "-n", "demo", "-m", prodC)
	tr := s.releaseTrace(t, "vault", 1, complete)
	if !slices.ContainsFunc(tr.Spans, func(sp jaeger.Span) bool { return sp.OperationName == "apply Secret" }) {
		t.Errorf("no span applies the Secret")
	}
	client := jaeger.New(s.env.JaegerURL)
	for _, svc := range services {
		traces, err := client.Find(s.ctx, svc, time.Hour, 500)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(traces, func(x jaeger.Trace) bool { return x.TraceID == tr.TraceID }) {
			t.Errorf("the search of %s's traces misses the Secret's release (%s): the check below would prove nothing", svc, tr.TraceID)
		}
		data, _ := json.Marshal(traces)
		for _, form := range []string{value, base64.StdEncoding.EncodeToString([]byte(value))} {
			if strings.Contains(string(data), form) {
				t.Errorf("a span of %s holds the Secret's value (%s)", svc, form)
			}
		}
	}
	// Nor a live read of it, nor JetStream's files (encrypted at rest),
	// though its steps, work and snapshot carry it.
	out := s.must("kubectl", "flotilla", "get", "secret", "db-credentials", "-n", "demo", "-m", prodC, "-o", "yaml")
	if strings.Contains(out, value) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(value))) || !strings.Contains(out, "password") {
		t.Errorf("the live read of the Secret shows its value, or not its key:\n%s", out)
	}
	found, files, err := natstest.InClear(filepath.Join(s.dir, "nats"), value, base64.StdEncoding.EncodeToString([]byte(value)), "db-credentials")
	for path, forms := range found {
		t.Errorf("JetStream's file %s holds %q in clear", path, forms)
	}
	if err != nil || files == 0 {
		t.Errorf("read %d of JetStream's files: %v", files, err)
	}
}

// checkMetrics scrapes every service's /metrics after the scenario and
// asserts the counters moved as the scenario moved them.
func (s *suite) checkMetrics(t *testing.T, testC, prodC string) {
	scrape := func(name string) string {
		t.Helper()
		url, ok := s.env.Metrics[name]
		if !ok {
			t.Fatalf("no metrics endpoint for %s (have %v)", name, s.env.Metrics)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", url, resp.Status)
		}
		return string(body)
	}
	atLeast := func(text, service, metric string, min float64, labels ...string) {
		t.Helper()
		if got := metricSum(text, metric, labels...); got < min {
			t.Errorf("%s: %s%v = %v, want at least %v", service, metric, labels, got, min)
		}
	}
	exactly := func(text, service, metric string, want float64, labels ...string) {
		t.Helper()
		if got := metricSum(text, metric, labels...); got != want {
			t.Errorf("%s: %s%v = %v, want %v", service, metric, labels, got, want)
		}
	}
	planner := scrape("planner")
	// demo v1..v4 (v4 the rollback), vault v1 and dashboards v1, each
	// through both steps; the edit without a new publishVersion cut nothing.
	exactly(planner, "planner", "flotilla_releases_started_total", 6)
	exactly(planner, "planner", "flotilla_releases_finished_total", 6)
	exactly(planner, "planner", "flotilla_releases_finished_total", 6, "result", "succeeded")
	exactly(planner, "planner", "flotilla_step_duration_seconds_count", 12, "type", "deploy", "phase", "succeeded")
	// A report handled again (redelivered after its ack was lost) counts again.
	atLeast(planner, "planner", "flotilla_planner_reports_total", 6, "kind", "decision")
	atLeast(planner, "planner", "flotilla_planner_reports_total", 12, "kind", "dispatch")
	// One series per consumer the planner watches (dispatch answers,
	// decisions, status bundles, and a report lane per cluster), each 1 or
	// 0 (0: NATS did not answer within the scrape's second).
	if up := metricValues(planner, "flotilla_consumer_info_up"); len(up) != 5 || slices.ContainsFunc(up, func(v float64) bool { return v != 0 && v != 1 }) {
		t.Errorf("planner: flotilla_consumer_info_up = %v, want five series of 0 or 1", up)
	}
	// A scrape that NATS answers in time shows a report lane's pending count.
	pending := `flotilla_consumer_pending_messages{consumer="planner-` + testC + `",stream="FLOTILLA_STATUS"}`
	eventually.True(t, 30*time.Second, "the pending count of the test cluster's report lane", func() (bool, error) {
		if strings.Contains(planner, pending) {
			return true, nil
		}
		planner = scrape("planner")
		return false, nil
	})

	gate := scrape("gate")
	exactly(gate, "gate", "flotilla_gate_decisions_total", 4, "via", "cli", "outcome", "recorded")
	exactly(gate, "gate", "flotilla_gate_decisions_total", 1, "via", "http", "outcome", "recorded")
	exactly(gate, "gate", "flotilla_gate_decisions_total", 1, "via", "nats", "outcome", "recorded")
	atLeast(gate, "gate", "flotilla_gate_decisions_total", 1, "via", "http", "outcome", "unauthenticated")
	exactly(gate, "gate", "flotilla_gate_approval_wait_seconds_count", 6, "decision", "approve")

	disp := scrape("dispatcher")
	for _, c := range []string{testC, prodC} {
		exactly(disp, "dispatcher", "flotilla_work_dispatched_total", 6, "cluster", c, "kind", "apply")
		exactly(disp, "dispatcher", "flotilla_work_dispatched_total", 1, "cluster", c, "kind", "delete")
		exactly(disp, "dispatcher", "flotilla_cluster_available", 1, "cluster", c, "status", "True")
		agent := scrape("agent-" + c)
		atLeast(agent, "agent-"+c, "flotilla_agent_apply_duration_seconds_count", 1, "cluster", c)
		atLeast(agent, "agent-"+c, "flotilla_agent_work_total", 1, "cluster", c, "kind", "apply", "result", "applied")
	}
	atLeast(scrape("agent-"+testC), "agent-"+testC, "flotilla_agent_drift_corrections_total", 1, "cluster", testC)
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([^ ]+)`)

// metricSum adds the samples of metric whose labels include every pair of labels.
func metricSum(text, metric string, labels ...string) float64 {
	sum := 0.0
	for _, v := range metricValues(text, metric, labels...) {
		sum += v
	}
	return sum
}

// metricValues are the samples of metric whose labels include every pair of labels.
func metricValues(text, metric string, labels ...string) []float64 {
	var out []float64
	for _, line := range strings.Split(text, "\n") {
		m := sampleRE.FindStringSubmatch(line)
		if m == nil || m[1] != metric {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(m[2], labels[i]+`="`+labels[i+1]+`"`) {
				ok = false
			}
		}
		if v, err := strconv.ParseFloat(m[3], 64); ok && err == nil {
			out = append(out, v)
		}
	}
	return out
}

// checkLargeRelease rolls out a release whose snapshot is too large to
// travel inline (over 512 KiB): agents, whose NATS users may not read the
// object store, still get it (compressed by the dispatcher).
func (s *suite) checkLargeRelease(t *testing.T, testC, prodC string) {
	var b strings.Builder
	for i := 0; b.Len() < 800<<10; i++ {
		fmt.Fprintf(&b, `{"id":%d,"title":"CPU of node %d","type":"timeseries","targets":[{"expr":"rate(node_cpu_seconds_total{instance=\"node-%d\"}[5m])"}]}`+"\n", i, i%50, i%50)
	}
	s.must("kubectl", "-n", "demo", "create", "configmap", "dashboards", "--from-file=panels.json="+writeFile(t, s.dir, "panels.json", b.String()))
	s.must("kubectl", "apply", "-f", writeFile(t, s.dir, "dashboards.yaml", `apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: dashboards
  namespace: demo
  annotations:
    app.oam.dev/publishVersion: v1
spec:
  components:
    - name: dashboards
      type: ref-objects
      properties:
        objects:
          - apiVersion: v1
            kind: ConfigMap
            name: dashboards
  workflow:
    ref: deploy-demo
`))
	s.eventually(`workflowSuspending`, "kubectl", "get", "app", "dashboards", "-n", "demo")
	s.must("kubectl", "flotilla", "workflow", "resume", "dashboards", "-n", "demo")
	s.eventually(`dashboards +dashboards +ref-objects +running +true`, "kubectl", "get", "app", "dashboards", "-n", "demo")
	for _, c := range []string{testC, prodC} {
		out := s.must("kubectl", "--kubeconfig", filepath.Join(s.dir, "kubeconfig", c), "-n", "demo", "get", "configmap", "dashboards", "-o", "jsonpath={.data.panels\\.json}")
		if out != b.String() {
			t.Errorf("%s holds %d bytes of panels.json, want the %d applied", c, len(out), b.Len())
		}
	}
}
