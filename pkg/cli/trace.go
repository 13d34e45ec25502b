package cli

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/jaeger"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

func newTrace(o *Options) *cobra.Command {
	var release int64
	jaegerURL := os.Getenv("JAEGER_QUERY_URL")
	cmd := &cobra.Command{
		Use:   "trace APP",
		Short: "Print a release's trace from Jaeger as a timeline (every service, every cluster)",
		Long: `Print a release's trace from Jaeger as an indented timeline: each span's start
(from the trace's start), duration, service and name, with its cluster, approver,
approval channel and error when it has them. Every release of an application is
one trace; its ID comes from the Application's UID and the release's revision.`,
		Example: `  kubectl flotilla trace demo -n demo
  kubectl flotilla trace demo -n demo --release 2 --jaeger-url http://127.0.0.1:16686`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.trace(cmd, args[0], release, jaegerURL)
		},
	}
	cmd.Flags().Int64Var(&release, "release", 0, "the release's revision (default: the latest release)")
	cmd.Flags().StringVar(&jaegerURL, "jaeger-url", jaegerURL, "Jaeger's query API ($JAEGER_QUERY_URL)")
	return cmd
}

func (o *Options) trace(cmd *cobra.Command, name string, release int64, jaegerURL string) error {
	if jaegerURL == "" {
		return errors.New("no Jaeger to read traces from: set --jaeger-url or JAEGER_QUERY_URL (make up writes it in .flotilla/env)")
	}
	if release < 0 {
		return fmt.Errorf("--release %d: a revision is 1 or more", release)
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	dyn, _, err := o.clients()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	u, err := dyn.Resource(v1beta1.ApplicationResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get application %s/%s: %w", ns, name, err)
	}
	app := &v1beta1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app); err != nil {
		return fmt.Errorf("application %s/%s: %w", ns, name, err)
	}
	if release == 0 {
		if app.Status.LatestRevision == nil || app.Status.LatestRevision.Revision == 0 {
			return fmt.Errorf("application %s/%s has no release yet", ns, name)
		}
		release = app.Status.LatestRevision.Revision
	}
	tid := telemetry.ReleaseTraceID(string(app.UID), release)
	tr, err := jaeger.New(jaegerURL).Trace(ctx, tid.String())
	if errors.Is(err, jaeger.ErrNotFound) {
		return fmt.Errorf("no trace for %s release %d (trace ID %s) in Jaeger at %s: spans may not have been exported yet", name, release, tid, jaegerURL)
	}
	if err != nil {
		return err
	}
	return writeTimeline(o.IO.Out, tr, timelineHeader{
		App: ns + "/" + name, Release: release, RootSpanID: telemetry.ReleaseSpanID(tid).String(),
	})
}

type timelineHeader struct {
	App     string // namespace/name
	Release int64
	// RootSpanID is the release span's ID, which the planner records when
	// the release ends.
	RootSpanID string
}

// Attributes the timeline shows, with their short names.
var timelineAttrs = []struct{ key, name string }{
	{string(telemetry.AttrCluster), "cluster"},
	{string(telemetry.AttrApprover), "approver"},
	{string(telemetry.AttrChannel), "channel"},
}

// writeTimeline prints tr as a header, notes, and one line per span in
// tree order: offset from the trace's start, duration, then the span
// indented two spaces per depth: service, name and notable attributes.
func writeTimeline(w io.Writer, tr *jaeger.Trace, h timelineHeader) error {
	nodes := tr.Tree()
	var b strings.Builder
	fmt.Fprintf(&b, "Trace %s  application %s  release %d  duration %s  %d spans\n",
		tr.TraceID, h.App, h.Release, formatDuration(tr.Duration()), len(tr.Spans))
	if h.RootSpanID != "" && tr.Span(h.RootSpanID) == nil {
		fmt.Fprintln(&b, "note: no release span yet: the planner records it when the release ends, so the release still runs (or its end is not exported yet); its steps are shown at the top level")
	}
	orphans := 0
	for _, n := range nodes {
		if n.Orphan && n.Span.ParentID() != h.RootSpanID {
			orphans++
		}
	}
	if orphans > 0 {
		fmt.Fprintf(&b, "note: %d span(s) whose parent is not in the trace (yet) are shown at the top level\n", orphans)
	}
	start := tr.Start()
	serviceWidth := 0
	for _, n := range nodes {
		serviceWidth = max(serviceWidth, 2*n.Depth+len(tr.Service(n.Span)))
	}
	fmt.Fprintf(&b, "%9s %9s  %-*s  %s\n", "OFFSET", "DURATION", serviceWidth, "SERVICE", "SPAN")
	for _, n := range nodes {
		s := n.Span
		service := strings.Repeat("  ", n.Depth) + tr.Service(s)
		if service == strings.Repeat("  ", n.Depth) {
			service += "?"
		}
		line := fmt.Sprintf("%9s %9s  %-*s  %s", "+"+formatDuration(s.Start().Sub(start)), formatDuration(s.Duration()), serviceWidth, service, s.OperationName)
		var attrs []string
		for _, a := range timelineAttrs {
			if v, ok := tr.Attr(s, a.key); ok && v != "" {
				attrs = append(attrs, a.name+"="+quoteIfNeeded(v))
			}
		}
		if failed, desc := s.Failed(); failed {
			if desc != "" {
				attrs = append(attrs, "error="+strconv.Quote(desc))
			} else {
				attrs = append(attrs, "error")
			}
		}
		if len(attrs) > 0 {
			line += "  " + strings.Join(attrs, " ")
		}
		fmt.Fprintln(&b, strings.TrimRight(line, " "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// formatDuration prints d to three significant digits or so: 850µs, 12.3ms,
// 1.234s, 2m3s.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		if d = -d; d < 0 { // math.MinInt64
			d = math.MaxInt64
		}
		return "-" + formatDuration(d)
	case d == 0:
		return "0s"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}
