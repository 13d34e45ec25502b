package gate

import (
	"slices"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// A decision is one approve or reject as it arrived, its sender
// authenticated.
type decision struct {
	// ID is the decision event's ID (a CLI request's is "cli." + its ID):
	// the same ID counts once.
	ID   string
	Data *events.ApprovalData
	Via  string
	// Identity and Groups are who authenticated. A Delegate identity (a bot
	// trusted to name the person) decides as the event's approver, with no
	// groups; any other decides as itself, whoever the event names.
	Identity string
	Groups   []string
	Delegate bool
	// Namespaces are where the identity may decide ("*": everywhere); a
	// CLI request's, which the hub's RBAC vouches for, is nil (anywhere).
	Namespaces []string
	// TraceParent is the sender's own trace context (a bot's): the wait's
	// span links to it.
	TraceParent string
}

// approver is who the decision is recorded for, and the groups vouching
// for them.
func (in *decision) approver() (string, []string) {
	if in.Delegate {
		return in.Data.Approver, nil
	}
	return in.Identity, in.Groups
}

// outcome is what a counted decision did to its step.
type outcome int

const (
	counted  outcome = iota // counted: the step waits for more approvals
	approved                // the step may go on
	rejected                // the step fails
)

// decide applies one decision to the wait w (nil when nothing of the
// Application waits), at now: it returns the wait as it becomes and what
// the decision did, or the refusal (a *problem.Error, see refusals.go). It
// changes nothing it is given. Every rule of a decision lives here:
//
//   - a bot decides only in the namespaces it is trusted in, else Forbidden;
//   - nothing waits: NotWaiting;
//   - an ID already seen counts once: Replayed;
//   - the decision is for the run waiting (its release name and attempt,
//     and its publishVersion when the decision gives one), else Stale;
//   - for the step waiting, else WrongStep;
//   - which is not decided yet, else AlreadyDecided;
//   - by an approver the step allows (by name or group; none listed: any
//     trusted identity), else Forbidden;
//   - a reject ends the wait; approvals end it once minApprovals distinct
//     approvers approved (the same approver twice counts once, and all the
//     people one delegate bot names count once: no bot meets a quorum alone).
func decide(w *waiting, in decision, now time.Time) (*waiting, outcome, error) {
	d := in.Data
	if in.Namespaces != nil && !slices.Contains(in.Namespaces, d.Namespace) && !slices.Contains(in.Namespaces, "*") {
		return nil, counted, refuse(ReasonForbidden, "%s may decide only in namespaces %v, not in %q", in.Identity, in.Namespaces, d.Namespace)
	}
	if w == nil {
		return nil, counted, refuse(ReasonNotWaiting, "no step of application %s/%s waits for a decision", d.Namespace, d.Application)
	}
	approver, groups := in.approver()
	switch {
	case slices.Contains(w.Seen, in.ID):
		return nil, counted, refuse(ReasonReplayed, "decision %s was already received (replay)", in.ID)
	case d.Release != w.Release || d.Attempt != w.Attempt:
		return nil, counted, refuse(ReasonStale, "stale: %s/%s waits in release %s, run %d, not %s run %d", d.Namespace, d.Application, w.Release, w.Attempt, d.Release, d.Attempt)
	case d.PublishVersion != "" && d.PublishVersion != w.PublishVersion:
		return nil, counted, refuse(ReasonStale, "stale: %s/%s waits on publishVersion %q, not %q", d.Namespace, d.Application, w.PublishVersion, d.PublishVersion)
	case d.Step != w.Step:
		return nil, counted, refuse(ReasonWrongStep, "stale: step %q does not wait; %q does", d.Step, w.Step)
	case w.decided():
		return nil, counted, refuse(ReasonAlreadyDecided, "step %q of %s was already decided", d.Step, w.Release)
	case !allowed(w.Approvers, approver, groups):
		return nil, counted, refuse(ReasonForbidden, "%s may not decide step %q (approvers: %v)", approver, d.Step, w.Approvers)
	}
	next := w.clone()
	next.Seen = append(next.Seen, in.ID)
	again := slices.ContainsFunc(next.Approvals, func(a events.Approval) bool { return a.Approver == approver && a.Decision == d.Decision })
	if !again {
		a := events.Approval{Approver: approver, Decision: d.Decision, Via: in.Via, Reason: d.Reason, Time: now.UTC(), EventID: in.ID}
		if in.Delegate {
			a.By = in.Identity
		}
		next.Approvals = append(next.Approvals, a)
	}
	out := counted
	switch {
	case d.Decision == events.DecisionReject:
		out, next.Decision = rejected, events.TypeStepRejected
	case approvals(next) >= max(next.MinApprovals, 1):
		out, next.Decision = approved, events.TypeStepApproved
	}
	next.Reason, next.Link = d.Reason, in.TraceParent
	return next, out, nil
}

// approvals counts the approvals recorded on w toward its quorum: each
// person once, and every person one delegate bot named once in all.
func approvals(w *waiting) int {
	n := 0
	delegates := map[string]bool{}
	for _, a := range w.Approvals {
		if a.Decision != events.DecisionApprove {
			continue
		}
		if a.By != "" {
			if delegates[a.By] {
				continue
			}
			delegates[a.By] = true
		}
		n++
	}
	return n
}

// allowed reports whether who (a name and groups) may decide a step whose
// approvers are listed; an empty list allows every trusted identity.
func allowed(approvers []string, name string, groups []string) bool {
	if len(approvers) == 0 {
		return true
	}
	for _, a := range approvers {
		if a == name || slices.Contains(groups, a) {
			return true
		}
	}
	return false
}
