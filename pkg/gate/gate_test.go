package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/deploy/crds"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// A step that needs two approvers goes on only after two distinct ones; a
// reject fails the step; an approver not listed is refused. (The seed's
// single approval, over each way in, runs in test/e2e.)
func TestQuorumRejectAndApprovers(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{Clusters: []string{"unused"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := crds.Install(ctx, env.Hub.Config); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.New(t).JetStream(t)
	cfg := &gate.Config{Identities: []gate.Identity{
		{Name: "alice", HMACSecret: "a", Groups: []string{"release-managers"}},
		{Name: "bob", HMACSecret: "b", Groups: []string{"release-managers"}},
		{Name: "eve", HMACSecret: "e"},
	}}
	ports, _ := testbed.FreePorts(1)
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	g, err := gate.New(env.Hub.Config, js, slog.New(slog.DiscardHandler), cfg, gate.Options{Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(gctx, &http.Server{Addr: addr}) }()
	defer func() { stop(); <-done }()

	suspend := func(app string, props string) events.AppRef {
		ref := events.AppRef{Namespace: "ns", Application: app, UID: "uid-" + app, Release: app + "-v1", Revision: 1, PublishVersion: "v1"}
		e := events.New(events.StepEventID(ref, "deploy-prod", events.TypeStepSuspended), events.SourcePlanner, events.TypeStepSuspended, "",
			&events.StepData{AppRef: ref, Step: "deploy-prod", StepType: "deploy", Index: 1, Reason: "WaitingApproval", Properties: json.RawMessage(props)})
		if _, err := bus.Publish(ctx, js, bus.StepSubject("ns", app), e); err != nil {
			t.Fatal(err)
		}
		return ref
	}
	post := func(who, app, decision string) int {
		body, _ := json.Marshal(events.ApprovalData{Namespace: "ns", Application: app, PublishVersion: "v1", Step: "deploy-prod", Decision: decision, Approver: who, Reason: "checked"})
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/approvals", bytes.NewReader(body))
			for k, v := range map[string]string{"ce-specversion": "1.0", "ce-type": events.TypeApproval, "ce-source": "/test", "ce-id": fmt.Sprint(time.Now().UnixNano()),
				"Content-Type": "application/json", gate.HTTPHeaderKeyID: who, gate.HTTPHeaderTimestamp: ts, gate.HTTPHeaderSignature: gate.SignHTTP(who[:1], ts, body)} {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode == http.StatusNotFound {
				// The gate is starting, or has not seen the step suspend yet.
				if ctx.Err() != nil {
					t.Fatal("gate never answered")
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			resp.Body.Close()
			return resp.StatusCode
		}
	}
	decisions := func(app string) []*events.Event {
		tl, err := bus.NewTail(ctx, js, bus.StreamGate, bus.GateSubject("decisions", "ns", app))
		if err != nil {
			t.Fatal(err)
		}
		evs, err := tl.Events()
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	waitDecisions := func(app string, n int) []*events.Event {
		for {
			if evs := decisions(app); len(evs) >= n || ctx.Err() != nil {
				return evs
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	suspend("quorum", `{"auto":false,"policies":["p"],"approvers":["release-managers"],"minApprovals":2}`)
	if code := post("alice", "quorum", "approve"); code != http.StatusAccepted {
		t.Fatalf("alice: %d", code)
	}
	if code := post("alice", "quorum", "approve"); code != http.StatusAccepted {
		t.Fatalf("alice again: %d", code) // a new event of the same person counts once
	}
	if code := post("eve", "quorum", "approve"); code != http.StatusForbidden {
		t.Errorf("eve, not in approvers: %d, want 403", code)
	}
	time.Sleep(200 * time.Millisecond)
	if evs := decisions("quorum"); len(evs) != 0 {
		t.Fatalf("one distinct approver of two decided the step: %v", evs[0].Type)
	}
	if code := post("bob", "quorum", "approve"); code != http.StatusAccepted {
		t.Fatalf("bob: %d", code)
	}
	evs := waitDecisions("quorum", 1)
	if len(evs) != 1 || evs[0].Type != events.TypeStepApproved {
		t.Fatalf("decisions %v", evs)
	}
	if d := evs[0].Data.(*events.StepDecisionData); len(d.Approvals) != 2 || d.Approvals[0].Approver != "alice" || d.Approvals[1].Approver != "bob" || d.Approvals[0].Via != "http" {
		t.Errorf("approvals %+v", d.Approvals)
	}
	if code := post("bob", "quorum", "approve"); code != http.StatusConflict {
		t.Errorf("a decision after the step was decided: %d, want 409", code)
	}

	suspend("rejected", `{"auto":false,"policies":["p"]}`)
	if code := post("eve", "rejected", "reject"); code != http.StatusAccepted {
		t.Fatalf("eve rejects: %d", code)
	}
	evs = waitDecisions("rejected", 1)
	if len(evs) != 1 || evs[0].Type != events.TypeStepRejected || evs[0].Data.(*events.StepDecisionData).Approvals[0].Approver != "eve" {
		t.Fatalf("decisions %v", evs)
	}

	// The same suspension again (redelivered after the duplicate window)
	// keeps the decision: a second one is refused, nothing new is sent.
	again := events.New("redelivered.rejected", events.SourcePlanner, events.TypeStepSuspended, "",
		&events.StepData{AppRef: events.AppRef{Namespace: "ns", Application: "rejected", UID: "uid-rejected", Release: "rejected-v1", Revision: 1, PublishVersion: "v1"},
			Step: "deploy-prod", StepType: "deploy", Index: 1, Reason: "WaitingApproval", Properties: json.RawMessage(`{"auto":false,"policies":["p"]}`)})
	if _, err := bus.Publish(ctx, js, bus.StepSubject("ns", "rejected"), again); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if code := post("alice", "rejected", "approve"); code != http.StatusConflict {
		t.Errorf("an approval after a redelivered suspension of a rejected step: %d, want 409", code)
	}
	if evs := decisions("rejected"); len(evs) != 1 {
		t.Errorf("%d decisions sent for one step", len(evs))
	}

	// An approve and a reject racing on one step: the one recorded is the
	// one the planner gets.
	for i := range 12 {
		app := fmt.Sprintf("race-%d", i)
		suspend(app, `{"auto":false,"policies":["p"]}`)
		codes := make(chan [2]int, 2)
		for _, who := range []struct{ name, decision string }{{"alice", "approve"}, {"eve", "reject"}} {
			go func() {
				c := post(who.name, app, who.decision)
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
		evs := waitDecisions(app, 1)
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
	store, err := js.ObjectStore(ctx, bus.ObjectSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutBytes(ctx, "ns/large/v1-abc", array); err != nil {
		t.Fatal(err)
	}
	ref := events.AppRef{Namespace: "ns", Application: "large", UID: "uid-large", Release: "large-v1", Revision: 1, PublishVersion: "v1"}
	e := events.New(events.StepEventID(ref, "deploy-prod", events.TypeStepSuspended), events.SourcePlanner, events.TypeStepSuspended, "",
		&events.StepData{AppRef: ref, Step: "deploy-prod", StepType: "deploy", Index: 1, Reason: "WaitingApproval",
			Snapshot: &events.Snapshot{Digest: digest, ObjectStore: "ns/large/v1-abc"}})
	if _, err := bus.Publish(ctx, js, bus.StepSubject("ns", "large"), e); err != nil {
		t.Fatal(err)
	}
	for {
		tl, err := bus.NewTail(ctx, js, bus.StreamGate, bus.GateSubject("requested", "ns", "large"))
		if err != nil {
			t.Fatal(err)
		}
		reqs, _ := tl.Events()
		if len(reqs) > 0 {
			got := reqs[0].Data.(*events.ApprovalRequestedData).Objects
			if len(got) != 1 || got[0].Name != "web" || len(got[0].Images) != 1 || got[0].Images[0] != "registry/web:2" {
				t.Errorf("approval request of a large release lists %+v", got)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no approval request for the large release")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Every decision, accepted or refused, is audited.
	tl, err := bus.NewTail(ctx, js, bus.StreamGate, "flotilla.gate.audit.>")
	if err != nil {
		t.Fatal(err)
	}
	audits, _ := tl.Events()
	refused := 0
	for _, e := range audits {
		if !e.Data.(*events.ApprovalAuditData).Accepted {
			refused++
		}
	}
	if len(audits) < 6 || refused < 2 {
		t.Errorf("%d audit records, %d refused; want every decision recorded", len(audits), refused)
	}
	// Refusals are counted by reason.
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m bytes.Buffer
	_, _ = m.ReadFrom(resp.Body)
	for _, want := range []string{`flotilla_gate_decisions_total{outcome="forbidden",via="http"} 1`, `flotilla_gate_decisions_total{outcome="stale_or_replayed",via="http"} 14`, `flotilla_gate_decisions_total{outcome="recorded",via="http"} 16`} {
		if !bytes.Contains(m.Bytes(), []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
