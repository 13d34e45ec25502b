package gate_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/gate"
)

// An approval over NATS is signed, and its ce-time is judged by when the
// stream stored it, not by the gate's clock: one sent more than five
// minutes before it was stored is refused (401-equivalent) and audited; one
// within counts, even when the gate reads it long after (here, its clock
// an hour ahead, as if it had been down). Messages that are not approvals,
// or not signed by a trusted key, are audited and refused too.
func TestNATSClockCheck(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	f := start(t, "natsclock", &gate.Config{Identities: []gate.Identity{{Name: "nats-bot", NKey: pub, Namespaces: []string{"*"}}}}, gate.Options{},
		func(g *gate.Gate) { g.SetClock(func() time.Time { return time.Now().Add(time.Hour) }) })
	f.hold("clock", `{"auto":false,"policies":["p"]}`)

	publish := func(id string, sent time.Time, signer nkeys.KeyPair) {
		t.Helper()
		e := events.New(id, "/bots/chat", events.TypeApproval, f.ns+"/clock",
			&events.ApprovalData{Namespace: f.ns, Application: "clock", Release: "clock-v1", PublishVersion: "v1", Step: "deploy-prod", Decision: "approve", Approver: "alice"})
		e.Time = sent
		msg, err := events.Encode(bus.ApprovalSubject(f.ns, "clock"), e)
		if err != nil {
			t.Fatal(err)
		}
		if err := gate.SignNATS(msg, "nats-bot", signer); err != nil {
			t.Fatal(err)
		}
		if _, err := f.js.PublishMsg(f.ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	refusedAs := func(id string, code int, says string) {
		t.Helper()
		if a := f.audit("clock", id); a.Accepted || a.Code != code || a.Via != gate.ViaNATS || !strings.Contains(a.Reason, says) {
			t.Errorf("audit of %s: %+v, want refused %d saying %q", id, a, code, says)
		}
	}

	publish("too-old", time.Now().Add(-6*time.Minute), kp)
	refusedAs("too-old", http.StatusUnauthorized, "ce-time")
	other, _ := nkeys.CreateUser()
	publish("forged", time.Now(), other)
	refusedAs("forged", http.StatusUnauthorized, gate.ErrBadSignature.Error())
	if r := f.record("clock"); len(r.Approvals) != 0 || r.Decision != "" {
		t.Fatalf("refused approvals were counted: %+v", r)
	}

	// Not an approval at all: audited as malformed (the consumer's
	// OnRejected), with the message's ID.
	if _, err := f.js.PublishMsg(f.ctx, &nats.Msg{Subject: bus.ApprovalSubject(f.ns, "clock"), Header: nats.Header{events.HeaderID: {"garbage"}}, Data: []byte("approve!")}); err != nil {
		t.Fatal(err)
	}
	if a := f.auditOn(bus.GateSubject("audit", "unknown", "unknown"), "garbage"); a.Accepted || a.Code != http.StatusUnprocessableEntity || a.Via != gate.ViaNATS {
		t.Errorf("audit of a message that is no event: %+v, want refused 422", a)
	}

	publish("in-time", time.Now().Add(-4*time.Minute), kp)
	evs := f.waitDecisions("clock", 1)
	if d := evs[0].Data.(*events.StepDecisionData); evs[0].Type != events.TypeStepApproved || len(d.Approvals) != 1 || d.Approvals[0].Via != gate.ViaNATS || d.Approvals[0].EventID != "in-time" {
		t.Fatalf("decision %s %+v, want approved by the approval in time", evs[0].Type, d.Approvals)
	}
	if a := f.audit("clock", "in-time"); !a.Accepted || a.Code != http.StatusAccepted || a.Approver != "nats-bot" {
		t.Errorf("audit of the approval in time: %+v", a)
	}
	m := f.metrics()
	for _, want := range []string{`flotilla_gate_decisions_total{outcome="unauthenticated",via="nats"} 2`, `flotilla_gate_decisions_total{outcome="malformed",via="nats"} 1`, `flotilla_gate_decisions_total{outcome="recorded",via="nats"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
