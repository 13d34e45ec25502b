package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// waiting is a step held for a decision, stored in the gate's KV bucket
// under its Application (one wait per Application at a time).
type waiting struct {
	events.AppRef
	Step         string            `json:"step"`
	StepType     string            `json:"stepType"`
	Approvers    []string          `json:"approvers,omitempty"`
	MinApprovals int               `json:"minApprovals"`
	Approvals    []events.Approval `json:"approvals,omitempty"`
	// Decision is set once the step is decided: the event type (step
	// approved or rejected); Reason is the deciding one's reason. Sent is
	// set once the decision went to the planner.
	Decision string `json:"decision,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Sent     bool   `json:"sent,omitempty"`
	// Link is the deciding request's own traceparent (a bot's), if any.
	Link string `json:"link,omitempty"`
	// Seen are the IDs of every decision event counted or refused as a replay.
	Seen []string `json:"seen,omitempty"`
	// Requested is when the step began to wait; TraceParent and TraceState
	// are its step's trace context, so the wait's span joins the release's
	// trace however late the decision comes.
	Requested   time.Time `json:"requested,omitzero"`
	TraceParent string    `json:"traceparent,omitempty"`
	TraceState  string    `json:"tracestate,omitempty"`
}

// stepProps are the properties of a manual step the gate reads.
type stepProps struct {
	Approvers    []string `json:"approvers"`
	MinApprovals int      `json:"minApprovals"`
}

func (w *waiting) decided() bool { return w.Decision != "" }

// olderRun says whether w waits in a run older than ref's (release, then attempt).
func (w *waiting) olderRun(ref events.AppRef) bool {
	return w.Revision < ref.Revision || w.Revision == ref.Revision && w.Attempt < ref.Attempt
}

func (w *waiting) sameRun(ref events.AppRef) bool {
	return w.UID == ref.UID && w.Revision == ref.Revision && w.Attempt == ref.Attempt
}

// clone is a copy of w that shares no slice with it.
func (w *waiting) clone() *waiting {
	c := *w
	c.Approvers, c.Approvals, c.Seen = slices.Clone(w.Approvers), slices.Clone(w.Approvals), slices.Clone(w.Seen)
	return &c
}

// waits is the gate's KV bucket of held steps.
type waits struct{ kv jetstream.KeyValue }

func key(ns, app string) string { return ns + "." + app }

// edit is what a change does to the stored wait.
type edit int

const (
	keep edit = iota // write nothing
	put              // write the wait given (create it, or replace the one read)
	drop             // delete the wait read
)

// casAttempts bounds how often change reads again after losing a race.
const casAttempts = 5

// errContended is a change that lost casAttempts races in a row.
var errContended = errors.New("too many concurrent changes")

// get reads the wait of ns/app: nil when there is none, or when the record
// does not decode (its revision is still returned, so a put replaces it).
func (s *waits) get(ctx context.Context, ns, app string) (*waiting, uint64, error) {
	entry, err := s.kv.Get(ctx, key(ns, app))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read the wait of %s/%s: %w", ns, app, err)
	}
	w := &waiting{}
	if json.Unmarshal(entry.Value(), w) != nil {
		return nil, entry.Revision(), nil
	}
	return w, entry.Revision(), nil
}

// change is the one way a wait changes (held, decided, marked sent, ended):
// it reads the wait of ns/app (nil when none), has f say what to do with
// it, and writes that at the revision it read. A record changed meanwhile
// is read again and f asked again, at most casAttempts times (then the
// error is errContended). f must not change the wait it is given, and may
// be called more than once. change returns the wait as it now stands
// (written, read, or read before its deletion) and its revision; when f
// fails, its error as is, with the wait as read.
func (s *waits) change(ctx context.Context, ns, app string, f func(cur *waiting) (*waiting, edit, error)) (*waiting, uint64, error) {
	k := key(ns, app)
	// A NATS cluster electing a stream's leader (a node lost) answers
	// nothing for a few seconds: read and try again meanwhile, as after a
	// race lost (a write that did land is seen by the read).
	patience := time.Now().Add(transientPatience)
	transient := func(err error) bool {
		if !bus.IsTransient(err) || time.Now().After(patience) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
			return true
		}
	}
	for attempt := 0; attempt < casAttempts; attempt++ {
		cur, rev, err := s.get(ctx, ns, app)
		if err != nil {
			if transient(err) {
				attempt--
				continue
			}
			return nil, 0, err
		}
		next, op, err := f(cur)
		if err != nil {
			return cur, rev, err
		}
		switch op {
		case keep:
			return cur, rev, nil
		case drop:
			if rev == 0 {
				return cur, 0, nil
			}
			if err = s.kv.Delete(ctx, k, jetstream.LastRevision(rev)); err == nil {
				return cur, 0, nil
			}
		case put:
			data, merr := json.Marshal(next)
			if merr != nil {
				return cur, rev, fmt.Errorf("encode the wait of %s/%s: %w", ns, app, merr)
			}
			var nrev uint64
			if rev == 0 {
				nrev, err = s.kv.Create(ctx, k, data)
			} else {
				nrev, err = s.kv.Update(ctx, k, data, rev)
			}
			if err == nil {
				return next, nrev, nil
			}
		}
		if transient(err) {
			attempt--
			continue
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !bus.IsWrongLastSequence(err) {
			return cur, rev, fmt.Errorf("write the wait of %s/%s: %w", ns, app, err)
		}
		// Another change landed first: read again.
	}
	return nil, 0, fmt.Errorf("change the wait of %s/%s: %w", ns, app, errContended)
}

// transientPatience is how long a wait's change is tried again while
// NATS does not answer.
const transientPatience = 15 * time.Second

// apps lists the Applications that have a wait, as namespace/name.
func (s *waits) apps(ctx context.Context) ([][2]string, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list waiting steps: %w", err)
	}
	var apps [][2]string
	for k := range lister.Keys() {
		// A namespace is a DNS label: the first dot ends it.
		if ns, app, ok := strings.Cut(k, "."); ok {
			apps = append(apps, [2]string{ns, app})
		}
	}
	return apps, nil
}

// handleStep holds manual steps when they suspend and lets them go when
// they move on.
func (g *Gate) handleStep(ctx context.Context, e *events.Event) error {
	d, ok := e.Data.(*events.StepData)
	if !ok {
		return nil
	}
	if e.Type != events.TypeStepSuspended || d.Reason != "WaitingApproval" {
		return g.endWait(ctx, d, "no decision: step "+d.Step+" of "+d.Release+" "+events.Verb(e.Type))
	}
	return g.hold(ctx, e, d)
}

// hold stores the wait of a step that suspended for approval and tells
// bots of it.
func (g *Gate) hold(ctx context.Context, e *events.Event, d *events.StepData) error {
	var fresh *waiting
	late := false
	w, _, err := g.waits.change(ctx, d.Namespace, d.Application, func(cur *waiting) (*waiting, edit, error) {
		late = false
		switch {
		case cur != nil && cur.sameRun(d.AppRef) && cur.Step == d.Step:
			// A redelivered suspension: the wait, and any decision on it,
			// stand; only the request goes out again (its fixed ID drops a
			// repeat).
			return nil, keep, nil
		case cur != nil && !cur.olderRun(d.AppRef) && !cur.sameRun(d.AppRef):
			late = true // a late suspension of a run since replaced
			return nil, keep, nil
		}
		if fresh == nil {
			fresh = g.newWait(e, d)
		}
		return fresh, put, nil
	})
	if err != nil {
		return bus.Retry(100*time.Millisecond, fmt.Errorf("hold step %s of %s: %w", d.Step, d.Release, err))
	}
	if late {
		return nil
	}
	return g.request(ctx, e, d, w)
}

// newWait is the wait of a step that just suspended for approval.
func (g *Gate) newWait(e *events.Event, d *events.StepData) *waiting {
	var p stepProps
	if len(d.Properties) > 0 {
		if err := json.Unmarshal(d.Properties, &p); err != nil {
			// The planner validates these; should one slip through, nobody may
			// approve rather than anybody.
			g.log.Error("step properties unreadable: holding the step for nobody", "app", d.Namespace+"/"+d.Application, "step", d.Step, "err", err)
			p = stepProps{Approvers: []string{"(unreadable approvers property)"}}
		}
	}
	return &waiting{AppRef: d.AppRef, Step: d.Step, StepType: d.StepType, Approvers: p.Approvers, MinApprovals: max(p.MinApprovals, 1),
		Requested: g.now().UTC(), TraceParent: e.TraceParent, TraceState: e.TraceState}
}

// endWait removes the wait of a step (or an older run) that moved on,
// recording its span when it ended undecided.
func (g *Gate) endWait(ctx context.Context, d *events.StepData, why string) error {
	ended := false
	w, _, err := g.waits.change(ctx, d.Namespace, d.Application, func(cur *waiting) (*waiting, edit, error) {
		ended = cur != nil && (cur.olderRun(d.AppRef) || cur.sameRun(d.AppRef) && cur.Step == d.Step)
		if ended {
			return nil, drop, nil
		}
		return nil, keep, nil // nothing waits, or a newer wait took its place
	})
	if errors.Is(err, errContended) {
		return bus.Retry(time.Second, fmt.Errorf("end the wait of step %s of %s: %w", d.Step, d.Release, err))
	}
	if err != nil {
		return err
	}
	if ended && !w.decided() {
		g.traceWait(ctx, w, "", why)
	}
	return nil
}
