package gate_test

import (
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/gate"
)

// A resume request written by the CLI before the gate holds its step is
// not lost: the gate tries it again until the step waits, then counts it.
func TestCLIResumeBeforeTheStepWaits(t *testing.T) {
	f := start(t, "cli-early", &gate.Config{}, gate.Options{})
	f.mayResume("alice")
	f.createApp("early")
	f.resume("early", "r1", "alice")
	// The gate saw the request, and nothing waits yet.
	f.logs.logged(t, "resume request waits for its step to be held", "app", f.ns+"/early")

	f.hold("early", `{"auto":false,"policies":["p"]}`)
	evs := f.waitDecisions("early", 1)
	if d := evs[0].Data.(*events.StepDecisionData); evs[0].Type != events.TypeStepApproved || len(d.Approvals) != 1 ||
		d.Approvals[0].Approver != "alice" || d.Approvals[0].Via != gate.ViaCLI || d.Approvals[0].EventID != "cli.r1" {
		t.Fatalf("decision %s %+v, want approved by alice via cli", evs[0].Type, d.Approvals)
	}
	if e := f.kubeEvent("early", "cli.r1"); e.Reason != gate.EventApprovalRecorded || e.Type != corev1.EventTypeNormal {
		t.Errorf("Event of the CLI's approval: %s %s %q", e.Type, e.Reason, e.Message)
	}
	if m := f.metrics(); !strings.Contains(m, `flotilla_gate_decisions_total{outcome="recorded",via="cli"} 1`) {
		t.Error("the CLI's approval is not counted once as recorded")
	}
}

// A resume request names its writer; one who may not update the
// Application's status (no RBAC on applications/status) may not resume it:
// the SubjectAccessReview refuses, and the refusal is audited and told on
// the Application, where the CLI waits for it.
func TestCLIResumeNeedsRBAC(t *testing.T) {
	f := start(t, "cli-rbac", &gate.Config{}, gate.Options{})
	f.createApp("guarded")
	f.hold("guarded", `{"auto":false,"policies":["p"]}`)
	f.resume("guarded", "r2", "mallory")

	e := f.kubeEvent("guarded", "cli.r2")
	if e.Reason != gate.EventApprovalRefused || e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "mallory") || !strings.Contains(e.Message, "applications/status") {
		t.Errorf("Event of mallory's resume: %s %s %q, want a refusal naming the status mallory may not update", e.Type, e.Reason, e.Message)
	}
	if a := f.audit("guarded", "cli.r2"); a.Accepted || a.Code != http.StatusForbidden || a.Via != gate.ViaCLI || a.Approver != "mallory" {
		t.Errorf("audit of mallory's resume: %+v, want refused 403 via cli", a)
	}
	if r := f.record("guarded"); len(r.Approvals) != 0 || r.Decision != "" {
		t.Errorf("a refused resume was counted: %+v", r)
	}
	if evs := f.decisions("guarded"); len(evs) != 0 {
		t.Errorf("a refused resume decided the step: %v", evs[0].Type)
	}

	// Granted the RBAC, the next request (a new ID) counts.
	f.mayResume("mallory")
	f.resume("guarded", "r3", "mallory")
	evs := f.waitDecisions("guarded", 1)
	if d := evs[0].Data.(*events.StepDecisionData); evs[0].Type != events.TypeStepApproved || d.Approvals[0].Approver != "mallory" {
		t.Fatalf("decision %s %+v, want approved by mallory", evs[0].Type, d.Approvals)
	}
	m := f.metrics()
	for _, want := range []string{`flotilla_gate_decisions_total{outcome="forbidden",via="cli"} 1`, `flotilla_gate_decisions_total{outcome="recorded",via="cli"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
