package gate_test

import (
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/gate"
)

// A refused decision is a Warning Event ApprovalRefused on its Application,
// annotated with the decision's ID, saying who was refused and why; an
// accepted one is ApprovalRecorded. A caller that did not authenticate
// gets no Event on the Application it names.
func TestApprovalEvents(t *testing.T) {
	f := start(t, "evented", &gate.Config{Identities: []gate.Identity{
		{Name: "alice", HMACSecret: "a", Namespaces: []string{"*"}},
		{Name: "eve", HMACSecret: "e", Namespaces: []string{"*"}},
	}}, gate.Options{})
	f.createApp("web")
	f.hold("web", `{"auto":false,"policies":["p"],"approvers":["alice"]}`)

	code, a := f.post("eve", f.approval("web", "approve", "eve"), map[string]string{"ce-id": "eve-1"})
	if code != http.StatusForbidden || a["status"] != "refused" || !strings.Contains(a["reason"], "eve may not decide") {
		t.Fatalf("eve: %d %v, want 403 with the reason", code, a)
	}
	e := f.kubeEvent("web", "eve-1")
	if e.Reason != gate.EventApprovalRefused || e.Type != corev1.EventTypeWarning || e.InvolvedObject.Kind != "Application" || e.InvolvedObject.UID == "" ||
		!strings.Contains(e.Message, "eve's approve of step \"deploy-prod\" via http refused (403)") {
		t.Errorf("Event of eve's refusal: %s %s %+v %q", e.Type, e.Reason, e.InvolvedObject, e.Message)
	}

	// Unauthenticated: audited, answered, and no Event (the answer comes
	// after the gate is done with the call).
	code, _ = f.post("eve", f.approval("web", "approve", "eve"), map[string]string{"ce-id": "forged-1", gate.HTTPHeaderSignature: "v1=00"})
	if code != http.StatusUnauthorized {
		t.Fatalf("a forged call: %d, want 401", code)
	}
	if au := f.auditOn("flotilla.gate.audit.>", "forged-1"); au.Accepted || au.Code != http.StatusUnauthorized {
		t.Errorf("audit of a forged call: %+v", au)
	}
	for _, ev := range f.kubeEvents("web") {
		if ev.Annotations[v1beta1.AnnotationDecisionID] == "forged-1" {
			t.Errorf("a forged call made an Event on the Application it names: %q", ev.Message)
		}
	}

	if code, _ := f.post("alice", f.approval("web", "approve", "alice"), map[string]string{"ce-id": "alice-1"}); code != http.StatusAccepted {
		t.Fatalf("alice: %d", code)
	}
	if e := f.kubeEvent("web", "alice-1"); e.Reason != gate.EventApprovalRecorded || e.Type != corev1.EventTypeNormal || e.Message != `alice approves step "deploy-prod" via http` {
		t.Errorf("Event of alice's approval: %s %s %q", e.Type, e.Reason, e.Message)
	}
}
