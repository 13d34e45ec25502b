package gate

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// held is a wait of step deploy-prod of release demo-v1 (publishVersion v1).
func held(approvers []string, minApprovals int) *waiting {
	return &waiting{
		AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "uid", Release: "demo-v1", Revision: 1, PublishVersion: "v1"},
		Step:   "deploy-prod", StepType: "deploy", Approvers: approvers, MinApprovals: minApprovals,
	}
}

// by is a decision sent by identity who (in groups), approving step
// deploy-prod of v1 unless changed.
type by struct {
	id, who  string
	groups   []string
	decision string
	// Optional: the event's approver (what a delegate records), another
	// publishVersion or step, the identity delegates, a traceparent.
	approver, publishVersion, step string
	delegate                       bool
	traceParent                    string
	// release and attempt name the run (default demo-v1, 0); namespaces
	// are where the identity is trusted (nil: anywhere, as the CLI).
	release    string
	attempt    int
	namespaces []string
}

func (b by) input() decision {
	d := &events.ApprovalData{Namespace: "demo", Application: "demo", Release: orText(b.release, "demo-v1"), Attempt: b.attempt,
		PublishVersion: b.publishVersion, Step: orText(b.step, "deploy-prod"),
		Decision: orText(b.decision, events.DecisionApprove), Approver: orText(b.approver, b.who), Reason: "because " + b.who}
	return decision{ID: b.id, Data: d, Via: ViaHTTP, Identity: b.who, Groups: b.groups, Delegate: b.delegate, Namespaces: b.namespaces, TraceParent: b.traceParent}
}

// then is what one decision should do: the outcome, or the refusal's reason.
type then struct {
	out     outcome
	refused string
}

func TestDecide(t *testing.T) {
	managers := []string{"release-managers"}
	tests := []struct {
		name      string
		wait      *waiting
		decisions []by
		want      []then
		// approvers are who the wait records, in order, at the end.
		approvers []string
	}{
		{"quorum of two: the same approver twice counts once", held(nil, 2),
			[]by{{id: "1", who: "alice"}, {id: "2", who: "alice"}},
			[]then{{out: counted}, {out: counted}}, []string{"alice"}},
		{"quorum of two distinct approvers", held(nil, 2),
			[]by{{id: "1", who: "alice"}, {id: "2", who: "bob"}},
			[]then{{out: counted}, {out: approved}}, []string{"alice", "bob"}},
		{"one approval by default", held(nil, 0),
			[]by{{id: "1", who: "alice"}},
			[]then{{out: approved}}, []string{"alice"}},
		{"approvers by group", held(managers, 1),
			[]by{{id: "1", who: "eve"}, {id: "2", who: "bob", groups: []string{"dev", "release-managers"}}},
			[]then{{refused: ReasonForbidden}, {out: approved}}, []string{"bob"}},
		{"approvers by name", held([]string{"alice"}, 1),
			[]by{{id: "1", who: "bob"}, {id: "2", who: "release-managers-bot"}, {id: "3", who: "alice"}},
			[]then{{refused: ReasonForbidden}, {refused: ReasonForbidden}, {out: approved}}, []string{"alice"}},
		{"approvers unset: any trusted identity", held(nil, 1),
			[]by{{id: "1", who: "eve"}},
			[]then{{out: approved}}, []string{"eve"}},
		{"a delegate records the event's approver, without its own groups", held([]string{"carol", "release-managers"}, 2),
			[]by{{id: "1", who: "chat-bot", approver: "carol", delegate: true}, {id: "2", who: "chat-bot", groups: managers, approver: "dave", delegate: true}},
			[]then{{out: counted}, {refused: ReasonForbidden}}, []string{"carol"}},
		{"a non-delegate records its own name, whoever the event names", held(nil, 2),
			[]by{{id: "1", who: "chat-bot", approver: "carol"}, {id: "2", who: "chat-bot", approver: "dave"}},
			[]then{{out: counted}, {out: counted}}, []string{"chat-bot"}},
		{"stale publishVersion", held(nil, 1),
			[]by{{id: "1", who: "alice", publishVersion: "v0"}},
			[]then{{refused: ReasonStale}}, nil},
		{"the waiting publishVersion, given, counts", held(nil, 1),
			[]by{{id: "1", who: "alice", publishVersion: "v1"}},
			[]then{{out: approved}}, []string{"alice"}},
		{"stale release name", held(nil, 1),
			[]by{{id: "1", who: "alice", release: "demo-v0"}},
			[]then{{refused: ReasonStale}}, nil},
		// A rollback reuses an older publishVersion: only the release name tells the runs apart.
		{"the same publishVersion in another release", held(nil, 1),
			[]by{{id: "1", who: "alice", release: "demo-v3", publishVersion: "v1"}},
			[]then{{refused: ReasonStale}}, nil},
		{"another run of the release (restarted)", restarted(),
			[]by{{id: "1", who: "alice"}, {id: "2", who: "alice", attempt: 1}},
			[]then{{refused: ReasonStale}, {out: approved}}, []string{"alice"}},
		{"a bot decides only where it is trusted", held(nil, 1),
			[]by{{id: "1", who: "team-b-bot", namespaces: []string{"team-b"}}, {id: "2", who: "nowhere-bot", namespaces: []string{}},
				{id: "3", who: "demo-bot", namespaces: []string{"team-b", "demo"}}},
			[]then{{refused: ReasonForbidden}, {refused: ReasonForbidden}, {out: approved}}, []string{"demo-bot"}},
		{"a bot trusted everywhere", held(nil, 1),
			[]by{{id: "1", who: "ops-bot", namespaces: []string{"*"}}},
			[]then{{out: approved}}, []string{"ops-bot"}},
		{"a delegate bot cannot meet a quorum alone", held(nil, 2),
			[]by{{id: "1", who: "chat-bot", approver: "carol", delegate: true}, {id: "2", who: "chat-bot", approver: "dave", delegate: true},
				{id: "3", who: "alice"}},
			[]then{{out: counted}, {out: counted}, {out: approved}}, []string{"carol", "dave", "alice"}},
		{"two delegate bots make two", held(nil, 2),
			[]by{{id: "1", who: "chat-bot", approver: "carol", delegate: true}, {id: "2", who: "mail-bot", approver: "dave", delegate: true}},
			[]then{{out: counted}, {out: approved}}, []string{"carol", "dave"}},
		{"wrong step", held(nil, 1),
			[]by{{id: "1", who: "alice", step: "deploy-test"}},
			[]then{{refused: ReasonWrongStep}}, nil},
		{"replay: the same ID counts once", held(nil, 2),
			[]by{{id: "1", who: "alice"}, {id: "1", who: "bob"}},
			[]then{{out: counted}, {refused: ReasonReplayed}}, []string{"alice"}},
		{"reject ends it, whatever the quorum", held(nil, 3),
			[]by{{id: "1", who: "alice"}, {id: "2", who: "bob", decision: events.DecisionReject}, {id: "3", who: "carol"}},
			[]then{{out: counted}, {out: rejected}, {refused: ReasonAlreadyDecided}}, []string{"alice", "bob"}},
		{"decided already", held(nil, 1),
			[]by{{id: "1", who: "alice"}, {id: "2", who: "bob"}, {id: "3", who: "bob", decision: events.DecisionReject}},
			[]then{{out: approved}, {refused: ReasonAlreadyDecided}, {refused: ReasonAlreadyDecided}}, []string{"alice"}},
		{"nothing waits", nil,
			[]by{{id: "1", who: "alice"}},
			[]then{{refused: ReasonNotWaiting}}, nil},
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.wait
			for i, b := range tt.decisions {
				before := fmt.Sprintf("%+v", w)
				next, out, err := decide(w, b.input(), now)
				if after := fmt.Sprintf("%+v", w); after != before {
					t.Fatalf("decision %d changed the wait it was given:\n%s\n%s", i, before, after)
				}
				want := tt.want[i]
				if want.refused != "" {
					p, ok := problem.As(err)
					if !ok || p.Reason != want.refused || p.Message == "" {
						t.Fatalf("decision %d (%s): %v, want refused %s", i, b.who, err, want.refused)
					}
					continue
				}
				if err != nil || out != want.out {
					t.Fatalf("decision %d (%s): outcome %v, %v; want %v", i, b.who, out, err, want.out)
				}
				w = next
			}
			var got []string
			if w != nil {
				for _, a := range w.Approvals {
					got = append(got, a.Approver)
				}
			}
			if !reflect.DeepEqual(got, tt.approvers) {
				t.Errorf("approvers recorded %v, want %v", got, tt.approvers)
			}
		})
	}
}

// restarted is held's wait in the release's second run (attempt 1).
func restarted() *waiting {
	w := held(nil, 1)
	w.Attempt = 1
	return w
}

// A counted decision records who, how, when and why; the final one sets
// the decision, its reason and the sender's trace.
func TestDecideRecords(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	bot := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	w, _, err := decide(held(nil, 2), by{id: "e1", who: "alice"}.input(), now)
	if err != nil {
		t.Fatal(err)
	}
	if w.decided() || !reflect.DeepEqual(w.Seen, []string{"e1"}) {
		t.Fatalf("one approval of two: decision %q, seen %v", w.Decision, w.Seen)
	}
	in := by{id: "e2", who: "bob", decision: events.DecisionReject, traceParent: bot}.input()
	in.Via = ViaNATS
	w, out, err := decide(w, in, now)
	if err != nil || out != rejected {
		t.Fatalf("reject: %v, %v", out, err)
	}
	want := events.Approval{Approver: "bob", Decision: events.DecisionReject, Via: ViaNATS, Reason: "because bob", Time: now.UTC(), EventID: "e2"}
	if len(w.Approvals) != 2 || w.Approvals[1] != want {
		t.Errorf("approvals %+v, want the last %+v", w.Approvals, want)
	}
	if w.Decision != events.TypeStepRejected || w.Reason != "because bob" || w.Link != bot || !reflect.DeepEqual(w.Seen, []string{"e1", "e2"}) {
		t.Errorf("decided wait %+v", w)
	}
	w, out, err = decide(held(nil, 1), by{id: "e3", who: "carol"}.input(), now)
	if err != nil || out != approved || w.Decision != events.TypeStepApproved {
		t.Errorf("approve: %v, %v, decision %q", out, err, w.Decision)
	}
}

// Each reason has one answer: the README's HTTP status and the metric's
// outcome; anything else is the gate's own failure.
func TestVerdicts(t *testing.T) {
	tests := []struct {
		err     error
		code    int
		outcome string
	}{
		{nil, http.StatusAccepted, "recorded"},
		{refuse(ReasonUnauthenticated, "x"), http.StatusUnauthorized, "unauthenticated"},
		{refuse(ReasonForbidden, "x"), http.StatusForbidden, "forbidden"},
		{refuse(ReasonNotWaiting, "x"), http.StatusNotFound, "not_waiting"},
		{refuse(ReasonStale, "x"), http.StatusConflict, "stale_or_replayed"},
		{refuse(ReasonWrongStep, "x"), http.StatusConflict, "stale_or_replayed"},
		{refuse(ReasonReplayed, "x"), http.StatusConflict, "stale_or_replayed"},
		{refuse(ReasonAlreadyDecided, "x"), http.StatusConflict, "stale_or_replayed"},
		{refuse(ReasonContended, "x"), http.StatusConflict, "stale_or_replayed"},
		{refuse(ReasonTooLarge, "x"), http.StatusRequestEntityTooLarge, "too_large"},
		{refuse(ReasonMalformed, "x"), http.StatusUnprocessableEntity, "malformed"},
		{fmt.Errorf("wrapped: %w", refuse(ReasonForbidden, "x")), http.StatusForbidden, "forbidden"},
		{errors.New("nats: timeout"), http.StatusInternalServerError, "error"},
		{refuse("SomethingNew", "x"), http.StatusInternalServerError, "error"},
	}
	for _, tt := range tests {
		if v := verdictOf(tt.err); v.code != tt.code || v.outcome != tt.outcome {
			t.Errorf("verdictOf(%v) = %d %s, want %d %s", tt.err, v.code, v.outcome, tt.code, tt.outcome)
		}
	}
	if len(verdicts) != 10 {
		t.Errorf("%d reasons in the table: add the new one's case here", len(verdicts))
	}
	for _, tt := range []struct {
		err  error
		want bool
	}{{nil, false}, {refuse(ReasonStale, "x"), false}, {refuse(ReasonContended, "x"), true}, {errors.New("kv down"), true}} {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v", tt.err, got)
		}
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		approvers []string
		name      string
		groups    []string
		want      bool
	}{
		{nil, "anyone", nil, true},
		{[]string{"alice"}, "alice", nil, true},
		{[]string{"alice"}, "bob", nil, false},
		{[]string{"release-managers"}, "bob", []string{"dev", "release-managers"}, true},
		{[]string{"release-managers"}, "release-managers-bot", nil, false},
	}
	for _, tt := range tests {
		if got := allowed(tt.approvers, tt.name, tt.groups); got != tt.want {
			t.Errorf("allowed(%v, %s, %v) = %v", tt.approvers, tt.name, tt.groups, got)
		}
	}
}
