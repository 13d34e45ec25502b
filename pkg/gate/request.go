package gate

import (
	"context"
	"encoding/json"
	"fmt"

	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// request tells bots what w waits for: the step, who may decide, and the
// objects it will deploy with their images.
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
// from the object store (if its digest vouches for it), so approvers see
// what they approve. Unreadable, the request goes out without the list
// (the step still waits).
func (g *Gate) snapshotObjects(ctx context.Context, s *events.Snapshot) *events.Snapshot {
	if s == nil || len(s.Objects) > 0 || s.ObjectStore == "" {
		return s
	}
	store, err := bus.Snapshots(ctx, g.js)
	if err == nil {
		var objects []json.RawMessage
		if objects, err = snapshot.Open(ctx, store, s); err == nil {
			return &events.Snapshot{Digest: s.Digest, Objects: objects}
		}
	}
	g.log.WarnContext(ctx, "approval request without its objects: snapshot unreadable", "snapshot", s.ObjectStore, "err", err)
	return s
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
