package jaeger

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Trace is one trace as Jaeger's query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
	Warnings  []string           `json:"warnings,omitempty"`
}

// Span is one span. Times are in microseconds, as Jaeger sends them.
type Span struct {
	TraceID        string      `json:"traceID"`
	SpanID         string      `json:"spanID"`
	OperationName  string      `json:"operationName"`
	References     []Reference `json:"references"`
	StartMicros    int64       `json:"startTime"`
	DurationMicros int64       `json:"duration"`
	Tags           []KeyValue  `json:"tags"`
	Logs           []Log       `json:"logs,omitempty"`
	ProcessID      string      `json:"processID"`
	Warnings       []string    `json:"warnings,omitempty"`
}

// Reference links a span to another: CHILD_OF names its parent,
// FOLLOWS_FROM a span it only relates to (an OpenTelemetry link).
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Reference types.
const (
	ChildOf     = "CHILD_OF"
	FollowsFrom = "FOLLOWS_FROM"
)

// Process is the emitter of spans: its service name and resource attributes
// (an agent's flotilla.cluster, host.name, ...).
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// KeyValue is a tag. Type is string, bool, int64, float64 or binary
// (base64); Value keeps numbers exact (json.Number).
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Log is a span event.
type Log struct {
	TimestampMicros int64      `json:"timestamp"`
	Fields          []KeyValue `json:"fields"`
}

// String is the value as text: a string as is, anything else as JSON prints it.
func (kv KeyValue) String() string {
	switch v := kv.Value.(type) {
	case string:
		return v
	case nil:
		return ""
	case json.Number, bool:
		return fmt.Sprint(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
}

func tag(tags []KeyValue, key string) (string, bool) {
	for _, kv := range tags {
		if kv.Key == key {
			return kv.String(), true
		}
	}
	return "", false
}

// Tag is the value of the span's tag key (an attribute).
func (s *Span) Tag(key string) (string, bool) { return tag(s.Tags, key) }

// Tag is the value of the process's tag key (a resource attribute).
func (p Process) Tag(key string) (string, bool) { return tag(p.Tags, key) }

// Start is when the span started.
func (s *Span) Start() time.Time { return time.UnixMicro(s.StartMicros) }

// Duration is how long the span took.
func (s *Span) Duration() time.Duration { return time.Duration(s.DurationMicros) * time.Microsecond }

// End is when the span ended.
func (s *Span) End() time.Time { return s.Start().Add(s.Duration()) }

// ParentID is the span ID of the span's parent (its CHILD_OF reference in
// the same trace), or "" for a root.
func (s *Span) ParentID() string {
	for _, r := range s.References {
		if r.RefType == ChildOf && (r.TraceID == "" || r.TraceID == s.TraceID) {
			return r.SpanID
		}
	}
	return ""
}

// Failed reports whether the span ended in error, with the status
// description when there is one.
func (s *Span) Failed() (bool, string) {
	desc, _ := s.Tag("otel.status_description")
	if v, _ := s.Tag("error"); v == "true" {
		return true, desc
	}
	if v, _ := s.Tag("otel.status_code"); v == "ERROR" {
		return true, desc
	}
	return false, ""
}

// Process is the process that emitted s (zero when the trace lacks it).
func (t *Trace) Process(s *Span) Process { return t.Processes[s.ProcessID] }

// Service is the service name of the process that emitted s.
func (t *Trace) Service(s *Span) string { return t.Process(s).ServiceName }

// Attr is the span's tag key, else its process's (a resource attribute
// such as an agent's flotilla.cluster).
func (t *Trace) Attr(s *Span, key string) (string, bool) {
	if v, ok := s.Tag(key); ok {
		return v, true
	}
	return t.Process(s).Tag(key)
}

// Span is the span with that ID, or nil.
func (t *Trace) Span(id string) *Span {
	for i := range t.Spans {
		if t.Spans[i].SpanID == id {
			return &t.Spans[i]
		}
	}
	return nil
}

// Parent is the span's parent, or nil for a root or when the parent is
// not in the trace (not exported yet).
func (t *Trace) Parent(s *Span) *Span {
	id := s.ParentID()
	if id == "" || id == s.SpanID {
		return nil
	}
	return t.Span(id)
}

// Children are the spans whose parent is s, by start time.
func (t *Trace) Children(s *Span) []*Span {
	var out []*Span
	for i := range t.Spans {
		c := &t.Spans[i]
		if c != s && c.SpanID != s.SpanID && c.ParentID() == s.SpanID {
			out = append(out, c)
		}
	}
	sortByStart(out)
	return out
}

// Start is when the trace's first span started (zero for an empty trace).
func (t *Trace) Start() time.Time {
	if len(t.Spans) == 0 {
		return time.Time{}
	}
	first := t.Spans[0].StartMicros
	for _, s := range t.Spans[1:] {
		first = min(first, s.StartMicros)
	}
	return time.UnixMicro(first)
}

// Duration is from the first span's start to the last span's end.
func (t *Trace) Duration() time.Duration {
	if len(t.Spans) == 0 {
		return 0
	}
	start := t.Start()
	var end time.Time
	for i := range t.Spans {
		if e := t.Spans[i].End(); e.After(end) {
			end = e
		}
	}
	return end.Sub(start)
}

// Node is a span at its depth in the trace's tree.
type Node struct {
	Span  *Span
	Depth int
	// Orphan is true for a span whose parent is not in the trace.
	Orphan bool
}

// Tree lists every span once, depth first: roots and orphans (spans whose
// parent is missing) at depth 0, each followed by its children, siblings
// by start time. Spans caught in a reference cycle come last, as orphans.
func (t *Trace) Tree() []Node {
	byID := make(map[string]int, len(t.Spans))
	for i := range t.Spans {
		if _, dup := byID[t.Spans[i].SpanID]; !dup {
			byID[t.Spans[i].SpanID] = i
		}
	}
	children := make(map[int][]int, len(t.Spans))
	var roots []int
	orphan := make([]bool, len(t.Spans))
	for i := range t.Spans {
		pid := t.Spans[i].ParentID()
		p, ok := byID[pid]
		switch {
		case pid == "":
			roots = append(roots, i)
		case !ok || p == i:
			roots = append(roots, i)
			orphan[i] = true
		default:
			children[p] = append(children[p], i)
		}
	}
	byStart := func(idx []int) {
		slices.SortStableFunc(idx, func(a, b int) int {
			return cmp.Or(cmp.Compare(t.Spans[a].StartMicros, t.Spans[b].StartMicros), cmp.Compare(t.Spans[a].SpanID, t.Spans[b].SpanID))
		})
	}
	byStart(roots)
	for _, c := range children {
		byStart(c)
	}
	out := make([]Node, 0, len(t.Spans))
	seen := make([]bool, len(t.Spans))
	// An explicit stack: a hostile trace may nest deeper than recursion should go.
	type item struct{ i, depth int }
	visit := func(root int) {
		stack := []item{{root, 0}}
		for len(stack) > 0 {
			it := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[it.i] {
				continue
			}
			seen[it.i] = true
			out = append(out, Node{Span: &t.Spans[it.i], Depth: it.depth, Orphan: it.depth == 0 && orphan[it.i]})
			kids := children[it.i]
			for k := len(kids) - 1; k >= 0; k-- {
				stack = append(stack, item{kids[k], it.depth + 1})
			}
		}
	}
	for _, r := range roots {
		visit(r)
	}
	var rest []int
	for i := range t.Spans {
		if !seen[i] {
			rest = append(rest, i)
		}
	}
	byStart(rest)
	for _, i := range rest {
		orphan[i] = true
		visit(i)
	}
	return out
}

func sortByStart(spans []*Span) {
	slices.SortStableFunc(spans, func(a, b *Span) int {
		return cmp.Or(cmp.Compare(a.StartMicros, b.StartMicros), cmp.Compare(a.SpanID, b.SpanID))
	})
}
