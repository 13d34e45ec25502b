package gate

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// Reasons of the gate's Kubernetes Events on an Application (the CLI waits
// for one naming its request).
const (
	EventApprovalRecorded = "ApprovalRecorded"
	EventApprovalRefused  = "ApprovalRefused"
)

// audit records every decision, accepted (err nil) or refused, as an audit
// event, in the decisions metric, and as a Kubernetes Event on the
// Application. d is nil when the decision could not be read.
func (g *Gate) audit(ctx context.Context, id string, d *events.ApprovalData, via, approver string, err error) {
	v := verdictOf(err)
	a := &events.ApprovalAuditData{Via: via, EventID: id, Accepted: err == nil, Code: v.code}
	if d != nil {
		a.ApprovalData = *d
	}
	if approver != "" {
		a.Approver = approver
	}
	if err != nil {
		a.Reason = err.Error()
	}
	g.decisions.WithLabelValues(via, v.outcome).Inc()
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
	if ns == "unknown" || problem.Is(err, ReasonUnauthenticated) || problem.Is(err, ReasonTooLarge) {
		return
	}
	g.event(ctx, id, d, via, a)
}

// event is a decision's Kubernetes Event on its Application, annotated with
// the decision's ID; nothing when the Application is not on the hub.
func (g *Gate) event(ctx context.Context, id string, d *events.ApprovalData, via string, a *events.ApprovalAuditData) {
	u, err := g.dyn.Resource(v1beta1.ApplicationResource).Namespace(d.Namespace).Get(ctx, d.Application, metav1.GetOptions{})
	if err != nil {
		return
	}
	evType, reason, msg := corev1.EventTypeNormal, EventApprovalRecorded, fmt.Sprintf("%s %ss step %q via %s", a.Approver, d.Decision, d.Step, via)
	if !a.Accepted {
		evType, reason, msg = corev1.EventTypeWarning, EventApprovalRefused, fmt.Sprintf("%s's %s of step %q via %s refused (%d): %s", a.Approver, d.Decision, d.Step, via, a.Code, a.Reason)
	}
	now := metav1.NewTime(g.now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: d.Application + ".", Namespace: d.Namespace, Annotations: map[string]string{v1beta1.AnnotationDecisionID: id}},
		InvolvedObject: corev1.ObjectReference{APIVersion: v1beta1.GroupVersion.String(), Kind: "Application", Namespace: d.Namespace, Name: d.Application, UID: u.GetUID()},
		Reason:         reason, Message: msg, Type: evType, Source: corev1.EventSource{Component: "flotilla-gate"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := g.cs.CoreV1().Events(d.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		g.log.Warn("kubernetes event", "err", err)
	}
}
