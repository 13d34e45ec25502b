package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/jaeger"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

const (
	testTraceID = "af01ad01cfac82fdae94faa27a9323ed"
	testRootID  = "b89215c292c11787"
)

// seedTrace is the seed scenario's release as Jaeger returns it (spans in
// Jaeger's order, not the tree's); without lists spans to leave out.
func seedTrace(without ...string) *jaeger.Trace {
	t0 := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC).UnixMicro()
	str := func(kv ...string) []jaeger.KeyValue {
		var out []jaeger.KeyValue
		for i := 0; i < len(kv); i += 2 {
			out = append(out, jaeger.KeyValue{Key: kv[i], Type: "string", Value: kv[i+1]})
		}
		return out
	}
	failed := func(desc string) []jaeger.KeyValue {
		return append(str("otel.status_code", "ERROR", "otel.status_description", desc), jaeger.KeyValue{Key: "error", Type: "bool", Value: true})
	}
	type s struct {
		id, parent, name, process string
		startMs, durMs            int64
		tags                      []jaeger.KeyValue
	}
	spans := []s{
		{"s3", testRootID, "step deploy-prod", "p1", 9010, 2990, append(str("flotilla.step", "deploy-prod"), failed("apply failed in managedcluster-cprod02")...)},
		{"w1", "sw1", "apply release", "p4", 50, 1650, nil},
		{testRootID, "", "release", "p1", 0, 12000, str("flotilla.release", "demo-v1")},
		{"s1", testRootID, "step deploy-test", "p1", 5, 1795, str("flotilla.step", "deploy-test")},
		{"d1", "s1", "dispatch deploy-test", "p2", 10, 30, nil},
		{"sw1", "d1", "send work", "p2", 12, 3, str("flotilla.cluster", "managedcluster-ctest01")},
		{"a1", "w1", "apply Deployment", "p4", 55, 25, str("flotilla.object", "apps/v1 Deployment demo/demo")},
		{"h1", "w1", "wait healthy", "p4", 81, 1609, nil},
		{"s2", testRootID, "step approve-prod", "p1", 1810, 7190, nil},
		{"g1", "s2", "wait for approval", "p5", 1815, 7175, str("flotilla.approver", "alice@example.com", "flotilla.approval.channel", "slack")},
		{"d2", "s3", "dispatch deploy-prod", "p2", 9015, 25, nil},
		{"sw2", "d2", "send work", "p2", 9017, 3, str("flotilla.cluster", "managedcluster-cprod02")},
		{"w2", "sw2", "apply release", "p3", 9050, 2850, nil},
		{"a2", "w2", "apply Deployment", "p3", 9055, 45, append(str("flotilla.cluster", "managedcluster-cprod02"), failed("admission webhook denied the request")...)},
		{"st", "w2", "handle status", "p1", 11950, 0, str("flotilla.cluster", "managedcluster-cprod02")},
	}
	tr := &jaeger.Trace{TraceID: testTraceID, Processes: map[string]jaeger.Process{
		"p1": {ServiceName: "flotilla-planner"},
		"p2": {ServiceName: "flotilla-dispatcher"},
		"p3": {ServiceName: "flotilla-cluster-agent", Tags: str("flotilla.cluster", "managedcluster-cprod02", "host.name", "box")},
		"p4": {ServiceName: "flotilla-cluster-agent", Tags: str("flotilla.cluster", "managedcluster-ctest01")},
		"p5": {ServiceName: "flotilla-gate"},
	}}
outer:
	for _, x := range spans {
		for _, w := range without {
			if w == x.id {
				continue outer
			}
		}
		sp := jaeger.Span{TraceID: testTraceID, SpanID: x.id, OperationName: x.name, ProcessID: x.process,
			StartMicros: t0 + x.startMs*1000, DurationMicros: x.durMs * 1000, Tags: x.tags}
		if x.parent != "" {
			sp.References = []jaeger.Reference{{RefType: jaeger.ChildOf, TraceID: testTraceID, SpanID: x.parent}}
		}
		tr.Spans = append(tr.Spans, sp)
	}
	return tr
}

func TestWriteTimeline(t *testing.T) {
	header := timelineHeader{App: "demo/demo", Release: 1, RootSpanID: testRootID}
	tests := []struct {
		name   string
		trace  *jaeger.Trace
		header timelineHeader
		want   string
	}{
		{
			name: "whole release", trace: seedTrace(), header: header,
			want: `Trace af01ad01cfac82fdae94faa27a9323ed  application demo/demo  release 1  duration 12s  15 spans
   OFFSET  DURATION  SERVICE                           SPAN
      +0s       12s  flotilla-planner                  release
     +5ms    1.795s    flotilla-planner                step deploy-test
    +10ms      30ms      flotilla-dispatcher           dispatch deploy-test
    +12ms       3ms        flotilla-dispatcher         send work  cluster=managedcluster-ctest01
    +50ms     1.65s          flotilla-cluster-agent    apply release  cluster=managedcluster-ctest01
    +55ms      25ms            flotilla-cluster-agent  apply Deployment  cluster=managedcluster-ctest01
    +81ms    1.609s            flotilla-cluster-agent  wait healthy  cluster=managedcluster-ctest01
   +1.81s     7.19s    flotilla-planner                step approve-prod
  +1.815s    7.175s      flotilla-gate                 wait for approval  approver=alice@example.com channel=slack
   +9.01s     2.99s    flotilla-planner                step deploy-prod  error="apply failed in managedcluster-cprod02"
  +9.015s      25ms      flotilla-dispatcher           dispatch deploy-prod
  +9.017s       3ms        flotilla-dispatcher         send work  cluster=managedcluster-cprod02
   +9.05s     2.85s          flotilla-cluster-agent    apply release  cluster=managedcluster-cprod02
  +9.055s      45ms            flotilla-cluster-agent  apply Deployment  cluster=managedcluster-cprod02 error="admission webhook denied the request"
  +11.95s        0s            flotilla-planner        handle status  cluster=managedcluster-cprod02
`,
		},
		{
			name: "release still running", trace: seedTrace(testRootID, "s3", "d2", "sw2", "w2", "a2", "st"), header: header,
			want: `Trace af01ad01cfac82fdae94faa27a9323ed  application demo/demo  release 1  duration 8.995s  8 spans
note: no release span yet: the planner records it when the release ends, so the release still runs (or its end is not exported yet); its steps are shown at the top level
   OFFSET  DURATION  SERVICE                         SPAN
      +0s    1.795s  flotilla-planner                step deploy-test
     +5ms      30ms    flotilla-dispatcher           dispatch deploy-test
     +7ms       3ms      flotilla-dispatcher         send work  cluster=managedcluster-ctest01
    +45ms     1.65s        flotilla-cluster-agent    apply release  cluster=managedcluster-ctest01
    +50ms      25ms          flotilla-cluster-agent  apply Deployment  cluster=managedcluster-ctest01
    +76ms    1.609s          flotilla-cluster-agent  wait healthy  cluster=managedcluster-ctest01
  +1.805s     7.19s  flotilla-planner                step approve-prod
   +1.81s    7.175s    flotilla-gate                 wait for approval  approver=alice@example.com channel=slack
`,
		},
		{
			name: "a span whose parent is not exported yet", trace: seedTrace("d1", "s2", "g1", "s3", "d2", "sw2", "w2", "a2", "st"), header: header,
			want: `Trace af01ad01cfac82fdae94faa27a9323ed  application demo/demo  release 1  duration 12s  6 spans
note: 1 span(s) whose parent is not in the trace (yet) are shown at the top level
   OFFSET  DURATION  SERVICE                     SPAN
      +0s       12s  flotilla-planner            release
     +5ms    1.795s    flotilla-planner          step deploy-test
    +12ms       3ms  flotilla-dispatcher         send work  cluster=managedcluster-ctest01
    +50ms     1.65s    flotilla-cluster-agent    apply release  cluster=managedcluster-ctest01
    +55ms      25ms      flotilla-cluster-agent  apply Deployment  cluster=managedcluster-ctest01
    +81ms    1.609s      flotilla-cluster-agent  wait healthy  cluster=managedcluster-ctest01
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeTimeline(&b, tt.trace, tt.header); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("timeline:\n%s\nwant:\n%s\ndiff at line %d", got, tt.want, firstDiff(got, tt.want))
			}
		})
	}
}

func firstDiff(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 850 * time.Microsecond: "850µs", 12345 * time.Microsecond: "12.3ms", 1234567 * time.Microsecond: "1.235s",
		2*time.Minute + 3400*time.Millisecond: "2m3s", 3 * time.Hour: "3h0m0s", -5 * time.Millisecond: "-5ms",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%d) = %q, want %q", int64(d), got, want)
		}
	}
	if got := formatDuration(math.MinInt64); !strings.HasPrefix(got, "-2562047h") {
		t.Errorf("formatDuration(MinInt64) = %q", got)
	}
}

func TestTraceNeedsJaeger(t *testing.T) {
	t.Setenv("JAEGER_QUERY_URL", "")
	var out, errOut bytes.Buffer
	code := Main("kubectl flotilla", []string{"trace", "demo", "-n", "demo"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "JAEGER_QUERY_URL") || !strings.Contains(errOut.String(), "--jaeger-url") {
		t.Errorf("exit %d, stderr %q: want a non-zero exit naming --jaeger-url and JAEGER_QUERY_URL", code, errOut.String())
	}
}

// The verb against a stand-in hub and Jaeger: it finds the trace of the
// release the Application names, or of --release N, and says plainly when
// Jaeger does not have it.
func TestTraceCommand(t *testing.T) {
	const uid = "6f1c2d3e-0000-4000-8000-000000000001"
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := `{"latestRevision":{"name":"demo-v2","revision":2}}`
		switch r.URL.Path {
		case "/apis/core.oam.dev/v1beta1/namespaces/demo/applications/demo":
		case "/apis/core.oam.dev/v1beta1/namespaces/demo/applications/fresh":
			status = `{}`
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"applications.core.oam.dev \"nope\" not found"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"apiVersion":"core.oam.dev/v1beta1","kind":"Application","metadata":{"name":%q,"namespace":"demo","uid":%q},"spec":{"components":[]},"status":%s}`,
			path.Base(r.URL.Path), uid, status)
	}))
	defer hub.Close()
	release2 := telemetry.ReleaseTraceID(uid, 2).String()
	jaegerSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/traces/"+release2 {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":404,"msg":"trace not found"}]}`)
			return
		}
		// The seed trace under the IDs the planner gives release 2.
		tr := seedTrace()
		root := telemetry.ReleaseSpanID(telemetry.ReleaseTraceID(uid, 2)).String()
		tr.TraceID = release2
		for i := range tr.Spans {
			sp := &tr.Spans[i]
			sp.TraceID = release2
			if sp.SpanID == testRootID {
				sp.SpanID = root
			}
			for j := range sp.References {
				sp.References[j].TraceID = release2
				if sp.References[j].SpanID == testRootID {
					sp.References[j].SpanID = root
				}
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": []*jaeger.Trace{tr}})
	}))
	defer jaegerSrv.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: hub, cluster: {server: "`+hub.URL+`"}}]
users: [{name: admin, user: {token: t}}]
contexts: [{name: hub, context: {cluster: hub, user: admin}}]
current-context: hub
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JAEGER_QUERY_URL", jaegerSrv.URL)
	release1 := telemetry.ReleaseTraceID(uid, 1).String()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string // in stdout, or in stderr when the command fails
	}{
		{"latest release", []string{"trace", "demo", "-n", "demo"}, 0,
			// No note: the release span is there, under the ID the planner gives it.
			"Trace " + release2 + "  application demo/demo  release 2  duration 12s  15 spans\n   OFFSET"},
		{"earlier release", []string{"trace", "demo", "-n", "demo", "--release", "1"}, 1,
			"error: no trace for demo release 1 (trace ID " + release1 + ") in Jaeger at " + jaegerSrv.URL + ": spans may not have been exported yet\n"},
		{"Jaeger from the flag", []string{"trace", "demo", "-n", "demo", "--release", "1", "--jaeger-url", hub.URL}, 1,
			"in Jaeger at " + hub.URL + ":"},
		{"no release yet", []string{"trace", "fresh", "-n", "demo"}, 1, "error: application demo/fresh has no release yet\n"},
		{"no application", []string{"trace", "nope", "-n", "demo"}, 1, "error: get application demo/nope: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main("kubectl flotilla", append(tt.args, "--kubeconfig", kubeconfig), &out, &errOut)
			got := out.String()
			if tt.wantCode != 0 {
				got = errOut.String()
			}
			if code != tt.wantCode || !strings.Contains(got, tt.want) {
				t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d with %q", code, out.String(), errOut.String(), tt.wantCode, tt.want)
			}
		})
	}
}
