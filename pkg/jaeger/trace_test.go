package jaeger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The testdata files are answers of the real Jaeger (v1.76.0, `make jaeger`)
// to /api/traces/{id}: a release's trace as Flotilla's four services send
// it, once whole and once while the release runs (no release span yet). Its
// spans are named as the services name them (README, "Tracing and metrics"):
// dispatch <step>, send work per cluster, apply release, apply <Kind>.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// outline is a trace's tree as "depth service/name [cluster]" lines.
func outline(tr *Trace) []string {
	var out []string
	for _, n := range tr.Tree() {
		line := strings.Repeat("  ", n.Depth) + tr.Service(n.Span) + "/" + n.Span.OperationName
		if c, ok := tr.Attr(n.Span, "flotilla.cluster"); ok {
			line += " [" + c + "]"
		}
		if n.Orphan {
			line += " (orphan)"
		}
		out = append(out, line)
	}
	return out
}

func TestDecodeTraces(t *testing.T) {
	whole := []string{
		"flotilla-planner/release",
		"  flotilla-planner/step deploy-test",
		"    flotilla-dispatcher/dispatch deploy-test",
		"      flotilla-dispatcher/send work [managedcluster-ctest01]",
		"        flotilla-cluster-agent/apply release [managedcluster-ctest01]",
		"          flotilla-cluster-agent/apply Deployment [managedcluster-ctest01]",
		"          flotilla-cluster-agent/wait healthy [managedcluster-ctest01]",
		"  flotilla-planner/step approve-prod",
		"    flotilla-gate/wait for approval",
		"  flotilla-planner/step deploy-prod",
		"    flotilla-dispatcher/dispatch deploy-prod",
		"      flotilla-dispatcher/send work [managedcluster-cprod02]",
		"        flotilla-cluster-agent/apply release [managedcluster-cprod02]",
		"          flotilla-cluster-agent/apply Deployment [managedcluster-cprod02]",
		"          flotilla-planner/handle status [managedcluster-cprod02]",
	}
	// Without the release span, its steps are orphans at the top.
	var inProgress []string
	for _, l := range whole[1:] {
		l = l[2:]
		if strings.HasPrefix(l, "flotilla-planner/step") {
			l += " (orphan)"
		}
		inProgress = append(inProgress, l)
	}
	tests := []struct {
		file      string
		wantErr   string
		traceID   string
		spans     int
		duration  time.Duration
		outline   []string
		processes int
	}{
		{file: "trace.json", traceID: "af01ad01cfac82fdae94faa27a9323ed", spans: 15, duration: 12 * time.Second, outline: whole, processes: 5},
		{file: "trace-in-progress.json", traceID: "af01ad01cfac82fdae94faa27a9323ed", spans: 14, duration: 11995 * time.Millisecond, outline: inProgress, processes: 5},
		{file: "not-found.json", wantErr: "trace not found"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			traces, err := DecodeTraces(readTestdata(t, tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeTraces() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(traces) != 1 {
				t.Fatalf("got %d traces, want 1", len(traces))
			}
			tr := &traces[0]
			if tr.TraceID != tt.traceID || len(tr.Spans) != tt.spans || len(tr.Processes) != tt.processes {
				t.Errorf("trace %s with %d spans, %d processes; want %s, %d, %d", tr.TraceID, len(tr.Spans), len(tr.Processes), tt.traceID, tt.spans, tt.processes)
			}
			if d := tr.Duration(); d != tt.duration {
				t.Errorf("Duration() = %v, want %v", d, tt.duration)
			}
			if got := outline(tr); !slices.Equal(got, tt.outline) {
				t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.outline, "\n"))
			}
		})
	}
}

func TestSpanHelpers(t *testing.T) {
	traces, err := DecodeTraces(readTestdata(t, "trace.json"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &traces[0]
	find := func(name, cluster string) *Span {
		t.Helper()
		for i := range tr.Spans {
			s := &tr.Spans[i]
			if c, _ := tr.Attr(s, "flotilla.cluster"); s.OperationName == name && c == cluster {
				return s
			}
		}
		t.Fatalf("no span %s in %s", name, cluster)
		return nil
	}
	wait := find("wait for approval", "")
	for key, want := range map[string]string{"flotilla.approver": "alice", "flotilla.approval.channel": "slack", "span.kind": "internal"} {
		if got, ok := wait.Tag(key); !ok || got != want {
			t.Errorf("Tag(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
	if _, ok := wait.Tag("flotilla.cluster"); ok {
		t.Error("the gate's span has a flotilla.cluster tag")
	}
	if p := tr.Parent(wait); p == nil || p.OperationName != "step approve-prod" {
		t.Errorf("Parent(wait for approval) = %v, want step approve-prod", p)
	}
	if wait.Duration() != 7175*time.Millisecond {
		t.Errorf("Duration() = %v", wait.Duration())
	}
	work := find("apply release", "managedcluster-ctest01")
	for key, want := range map[string]string{"flotilla.revision": "1", "flotilla.dry_run": "false", "ratio": "0.5"} {
		if got, ok := work.Tag(key); !ok || got != want {
			t.Errorf("work: Tag(%q) = %q, %v; want %q (numbers and bools as text)", key, got, ok, want)
		}
	}
	var kids []string
	for _, c := range tr.Children(work) {
		kids = append(kids, c.OperationName)
	}
	if !slices.Equal(kids, []string{"apply Deployment", "wait healthy"}) {
		t.Errorf("Children(work) = %v", kids)
	}
	failed := find("apply Deployment", "managedcluster-cprod02")
	if ok, desc := failed.Failed(); !ok || desc != "admission webhook denied the request" {
		t.Errorf("Failed() = %v, %q", ok, desc)
	}
	if ok, _ := work.Failed(); ok {
		t.Error("work failed, want not")
	}
	// The work's span hangs under the dispatcher's send, under its dispatch.
	send := tr.Parent(tr.Parent(failed))
	if c, _ := tr.Attr(send, "flotilla.cluster"); send.OperationName != "send work" || tr.Service(send) != "flotilla-dispatcher" || c != "managedcluster-cprod02" {
		t.Errorf("the work's parent is %s of %s in %s, want the dispatcher's send work to managedcluster-cprod02", send.OperationName, tr.Service(send), c)
	}
	// A link is a FOLLOWS_FROM reference, not a parent.
	dispatch := tr.Parent(send)
	if dispatch.OperationName != "dispatch deploy-prod" || len(dispatch.References) != 2 || tr.Parent(dispatch).OperationName != "step deploy-prod" {
		t.Errorf("dispatch %s refs %v: parent should be step deploy-prod", dispatch.OperationName, dispatch.References)
	}
	release := tr.Span("b89215c292c11787")
	if release == nil || tr.Parent(release) != nil || release.ParentID() != "" {
		t.Errorf("release span %v should be the root", release)
	}
	status := find("handle status", "managedcluster-cprod02")
	if len(status.Logs) != 1 || len(status.Logs[0].Fields) != 2 || status.Logs[0].Fields[1].String() != "workflowFailed" {
		t.Errorf("handle status logs = %+v", status.Logs)
	}
}

// Tree lists every span once whatever the references say.
func TestTreeOddReferences(t *testing.T) {
	span := func(id, parent string, start int64) Span {
		s := Span{TraceID: "t", SpanID: id, StartMicros: start}
		if parent != "" {
			s.References = []Reference{{RefType: ChildOf, TraceID: "t", SpanID: parent}}
		}
		return s
	}
	tests := []struct {
		name  string
		spans []Span
		want  []string
	}{
		{"empty", nil, nil},
		{"self parent", []Span{span("a", "a", 1)}, []string{"a*"}},
		{"cycle", []Span{span("a", "b", 2), span("b", "a", 1), span("c", "", 3)}, []string{"c", "b*", " a"}},
		{"duplicate IDs", []Span{span("a", "", 1), span("a", "", 2), span("b", "a", 3)}, []string{"a", " b", "a"}},
		{"siblings by start", []Span{span("r", "", 0), span("late", "r", 9), span("early", "r", 1), span("x", "gone", 5)}, []string{"r", " early", " late", "x*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Trace{TraceID: "t", Spans: tt.spans}
			var got []string
			for _, n := range tr.Tree() {
				s := strings.Repeat(" ", n.Depth) + n.Span.SpanID
				if n.Orphan {
					s += "*"
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Tree() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestClient(t *testing.T) {
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/traces/af01ad01cfac82fdae94faa27a9323ed":
			_, _ = w.Write(readTestdata(t, "trace.json"))
		case "/api/traces":
			query = r.URL.RawQuery
			_, _ = w.Write(readTestdata(t, "trace-in-progress.json"))
		case "/api/services":
			fmt.Fprint(w, `{"data":["flotilla-planner","flotilla-gate"],"total":2,"limit":0,"offset":0,"errors":null}`)
		case "/api/traces/00000000000000000000000000000bad":
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"data":null,"errors":[{"code":500,"msg":"storage on fire"}]}`)
		case "/api/traces/00000000000000000000000000000b0d":
			fmt.Fprint(w, `<html>not json</html>`)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write(readTestdata(t, "not-found.json"))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := New(srv.URL + "/")

	tr, err := c.Trace(ctx, "af01ad01cfac82fdae94faa27a9323ed")
	if err != nil || len(tr.Spans) != 15 {
		t.Fatalf("Trace() = %v, %v", tr, err)
	}
	_, err = c.Trace(ctx, "0123456789abcdef0123456789abcdef")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "0123456789abcdef0123456789abcdef") || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("Trace(unknown) error = %v, want ErrNotFound naming the trace and Jaeger", err)
	}
	_, err = c.Trace(ctx, "00000000000000000000000000000bad")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "storage on fire") || !strings.Contains(err.Error(), "500") {
		t.Errorf("Trace(failing) error = %v, want Jaeger's message and status", err)
	}
	_, err = c.Trace(ctx, "00000000000000000000000000000b0d")
	if err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("Trace(not JSON) error = %v", err)
	}

	traces, err := c.Find(ctx, "flotilla-planner", time.Hour, 50)
	if err != nil || len(traces) != 1 {
		t.Fatalf("Find() = %v, %v", traces, err)
	}
	for _, want := range []string{"service=flotilla-planner", "limit=50", "start=", "end="} {
		if !strings.Contains(query, want) {
			t.Errorf("Find asked %q, want %q in it", query, want)
		}
	}
	services, err := c.Services(ctx)
	if err != nil || !slices.Equal(services, []string{"flotilla-planner", "flotilla-gate"}) {
		t.Errorf("Services() = %v, %v", services, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Trace(cctx, "af01ad01cfac82fdae94faa27a9323ed"); !errors.Is(err, context.Canceled) {
		t.Errorf("Trace(canceled) error = %v, want context.Canceled", err)
	}
}

// FuzzDecodeTraces: Jaeger's answers are outside input. Decoding never
// panics, and a decoded trace's helpers hold up whatever it says.
func FuzzDecodeTraces(f *testing.F) {
	for _, name := range []string{"trace.json", "trace-in-progress.json", "not-found.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte(`{"data":[{"traceID":"t","spans":[{"spanID":"a","references":[{"refType":"CHILD_OF","spanID":"a"}]}]}]}`))
	f.Add([]byte(`{"data":[{"spans":[{"spanID":"a","references":[{"refType":"CHILD_OF","spanID":"b"}]},{"spanID":"b","references":[{"refType":"CHILD_OF","spanID":"a"}]}],"processes":null}]}`))
	f.Add([]byte(`{"data":[{"spans":[{"tags":[{"key":"k","value":{"x":[1,2]}}],"startTime":-9223372036854775808,"duration":9223372036854775807}]}]}`))
	f.Add([]byte(`{"data":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		traces, err := DecodeTraces(data)
		if err != nil {
			return
		}
		for i := range traces {
			tr := &traces[i]
			nodes := tr.Tree()
			if len(nodes) != len(tr.Spans) {
				t.Fatalf("Tree() has %d nodes for %d spans", len(nodes), len(tr.Spans))
			}
			seen := map[*Span]bool{}
			for _, n := range nodes {
				if seen[n.Span] {
					t.Fatalf("span %q twice in Tree()", n.Span.SpanID)
				}
				seen[n.Span] = true
				_ = tr.Service(n.Span)
				_, _ = tr.Attr(n.Span, "flotilla.cluster")
				_, _ = n.Span.Failed()
				_ = tr.Parent(n.Span)
				_ = tr.Children(n.Span)
				_ = n.Span.End()
			}
			_ = tr.Duration()
		}
	})
}
