package gate_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
)

// A step that needs two approvers goes on only after two distinct ones; a
// reject fails the step; an approver not listed is refused. (The rules one
// by one are in decide_test.go; the seed's single approval, over each way
// in, runs in test/e2e.)
func TestQuorumRejectAndApprovers(t *testing.T) {
	f := start(t, "quorum", &gate.Config{Identities: []gate.Identity{
		{Name: "alice", HMACSecret: "a", Groups: []string{"release-managers"}, Namespaces: []string{"*"}},
		{Name: "bob", HMACSecret: "b", Groups: []string{"release-managers"}, Namespaces: []string{"*"}},
		{Name: "eve", HMACSecret: "e", Namespaces: []string{"*"}},
	}}, gate.Options{})

	f.hold("quorum", `{"auto":false,"policies":["p"],"approvers":["release-managers"],"minApprovals":2}`)
	if code := f.approve("alice", "quorum", "approve"); code != http.StatusAccepted {
		t.Fatalf("alice: %d", code)
	}
	if code := f.approve("alice", "quorum", "approve"); code != http.StatusAccepted {
		t.Fatalf("alice again: %d", code) // a new event of the same person counts once
	}
	if code := f.approve("eve", "quorum", "approve"); code != http.StatusForbidden {
		t.Errorf("eve, not in approvers: %d, want 403", code)
	}
	// The gate answers once the decision is recorded and, were it final,
	// sent: the record holds one approver of two, and nothing went out.
	if r := f.record("quorum"); len(r.Approvals) != 1 || r.Approvals[0].Approver != "alice" || r.Decision != "" {
		t.Fatalf("after alice twice and eve: %+v, want alice's one approval, undecided", r)
	}
	if evs := f.decisions("quorum"); len(evs) != 0 {
		t.Fatalf("one distinct approver of two decided the step: %v", evs[0].Type)
	}
	if code := f.approve("bob", "quorum", "approve"); code != http.StatusAccepted {
		t.Fatalf("bob: %d", code)
	}
	evs := f.waitDecisions("quorum", 1)
	if len(evs) != 1 || evs[0].Type != events.TypeStepApproved {
		t.Fatalf("decisions %v", evs)
	}
	if d := evs[0].Data.(*events.StepDecisionData); len(d.Approvals) != 2 || d.Approvals[0].Approver != "alice" || d.Approvals[1].Approver != "bob" || d.Approvals[0].Via != "http" {
		t.Errorf("approvals %+v", d.Approvals)
	}
	if code := f.approve("bob", "quorum", "approve"); code != http.StatusConflict {
		t.Errorf("a decision after the step was decided: %d, want 409", code)
	}

	f.hold("rejected", `{"auto":false,"policies":["p"]}`)
	if code := f.approve("eve", "rejected", "reject"); code != http.StatusAccepted {
		t.Fatalf("eve rejects: %d", code)
	}
	evs = f.waitDecisions("rejected", 1)
	if len(evs) != 1 || evs[0].Type != events.TypeStepRejected || evs[0].Data.(*events.StepDecisionData).Approvals[0].Approver != "eve" {
		t.Fatalf("decisions %v", evs)
	}

	// The same suspension again (redelivered after the duplicate window)
	// keeps the decision: once the gate settled it, a second decision is
	// refused and nothing new is sent.
	again := f.suspension("rejected", `{"auto":false,"policies":["p"]}`)
	again.ID = "redelivered.rejected"
	f.settled(f.publishStep(again))
	if code := f.approve("alice", "rejected", "approve"); code != http.StatusConflict {
		t.Errorf("an approval after a redelivered suspension of a rejected step: %d, want 409", code)
	}
	if r := f.record("rejected"); r.Decision != events.TypeStepRejected || !r.Sent {
		t.Errorf("the rejected step's record after its suspension came again: %+v", r)
	}
	if evs := f.decisions("rejected"); len(evs) != 1 {
		t.Errorf("%d decisions sent for one step", len(evs))
	}

	// An approve and a reject racing on one step: the one recorded is the
	// one the planner gets.
	for i := range 12 {
		app := fmt.Sprintf("race-%d", i)
		f.hold(app, `{"auto":false,"policies":["p"]}`)
		codes := make(chan [2]int, 2)
		for _, who := range []struct{ name, decision string }{{"alice", "approve"}, {"eve", "reject"}} {
			go func() {
				c, _ := f.post(who.name, f.approval(app, who.decision, who.name), nil)
				d := 0
				if who.decision == "reject" {
					d = 1
				}
				codes <- [2]int{d, c}
			}()
		}
		var won []int
		for range 2 {
			r := <-codes
			if r[1] == http.StatusAccepted {
				won = append(won, r[0])
			} else if r[1] != http.StatusConflict {
				t.Fatalf("%s: a racing decision answered %d", app, r[1])
			}
		}
		if len(won) != 1 {
			t.Fatalf("%s: %d decisions of two racing ones were recorded", app, len(won))
		}
		evs := f.waitDecisions(app, 1)
		want := []string{events.TypeStepApproved, events.TypeStepRejected}[won[0]]
		var got []string
		for _, e := range evs {
			got = append(got, e.Type)
		}
		if len(got) != 1 || got[0] != want {
			t.Fatalf("%s: the gate recorded %s, the planner got %v", app, want, got)
		}
	}

	// A large snapshot travels by name: the approval request still lists
	// what the step will deploy, with its images.
	objs := []json.RawMessage{json.RawMessage(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry/web:2"}]}}}}`)}
	array, _ := json.Marshal(objs)
	digest, _ := snapshot.Digest(objs)
	store, err := f.js.ObjectStore(f.ctx, bus.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutBytes(f.ctx, f.ns+"/large/v1-abc", array); err != nil {
		t.Fatal(err)
	}
	large := f.suspension("large", "")
	large.Data.(*events.StepData).Snapshot = &events.Snapshot{Digest: digest, ObjectStore: f.ns + "/large/v1-abc"}
	f.publishStep(large)
	if got := f.requested("large").Objects; len(got) != 1 || got[0].Name != "web" || len(got[0].Images) != 1 || got[0].Images[0] != "registry/web:2" {
		t.Errorf("approval request of a large release lists %+v", got)
	}

	// Every decision, accepted or refused, is audited.
	audits := eventually.Value(t, patience, "an audit record of every decision", func() ([]*events.Event, error) {
		return f.events("flotilla.gate.audit.>")
	}, func(evs []*events.Event) bool { return len(evs) >= 31 })
	refused := 0
	for _, e := range audits {
		if !e.Data.(*events.ApprovalAuditData).Accepted {
			refused++
		}
	}
	if len(audits) != 31 || refused != 15 {
		t.Errorf("%d audit records, %d refused; want every decision recorded (31, 15 refused)", len(audits), refused)
	}
	// Refusals are counted by reason.
	m := f.metrics()
	for _, want := range []string{`flotilla_gate_decisions_total{outcome="forbidden",via="http"} 1`, `flotilla_gate_decisions_total{outcome="stale_or_replayed",via="http"} 14`, `flotilla_gate_decisions_total{outcome="recorded",via="http"} 16`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
