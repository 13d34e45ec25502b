package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// Record is an application's planner state in the runs KV bucket: the
// current release and its run, and what every cluster holds. It is written
// only by compare-and-set on the KV revision it was read at, so two planners
// (or one restarted mid-step) never both advance a step.
type Record struct {
	UID string `json:"uid"`
	// Key is what cut the current release (release.Key).
	Key      string          `json:"key"`
	Run      *workflow.Run   `json:"run"`
	Policies []events.Policy `json:"policies"`
	// TakeOver are the kinds the release may adopt in clusters (take-over policies).
	TakeOver []string `json:"takeOver,omitempty"`
	// ReadOnly are the kinds the release only reads in clusters (read-only policies).
	ReadOnly []string     `json:"readOnly,omitempty"`
	Snapshot snapshot.Ref `json:"snapshot"`
	// TraceID makes every event of the release one trace; TraceUnsampled
	// keeps the sampler's decision on it. TraceDone is set once the
	// release's root span was made (it ended, or a newer one replaced it).
	TraceID        string `json:"traceID"`
	TraceUnsampled bool   `json:"traceUnsampled,omitempty"`
	TraceDone      bool   `json:"traceDone,omitempty"`
	// Placed are the clusters holding objects of any release of the application.
	Placed []string `json:"placed,omitempty"`
	// Deleting is set once the delete event went out; Deleted are the
	// clusters that confirmed they removed everything.
	Deleting bool     `json:"deleting,omitempty"`
	Deleted  []string `json:"deleted,omitempty"`
	// Releases are the newest releases, oldest first (at most keepReleases).
	Releases []ReleaseInfo `json:"releases"`
	// LastOperation is the outcome of the last workflow operation carried out.
	LastOperation *v1beta1.OperationResult `json:"lastOperation,omitempty"`
	// Outbox are the transitions of the last save, whose events are
	// published after it (Planner.flush sends any a planner killed in
	// between did not).
	Outbox []workflow.Transition `json:"outbox,omitempty"`
}

// noteOutcome marks the current release succeeded once its workflow has.
func (r *Record) noteOutcome() {
	if r.Run == nil || r.Run.Phase != workflow.RunSucceeded {
		return
	}
	for i := range r.Releases {
		if r.Releases[i].Revision == r.Run.Revision {
			r.Releases[i].Succeeded = true
		}
	}
}

// ReleaseInfo is one kept release.
type ReleaseInfo struct {
	Revision       int64        `json:"revision"`
	PublishVersion string       `json:"publishVersion,omitempty"`
	Snapshot       snapshot.Ref `json:"snapshot"`
	Created        time.Time    `json:"created"`
	// Succeeded is set once the release's workflow succeeded (rollback target).
	Succeeded bool `json:"succeeded,omitempty"`
}

// keepReleases is how many releases (and their snapshots) are kept for rollback.
const keepReleases = 10

// keepNewest drops the releases beyond the newest keepReleases and returns
// their snapshots, to delete once the record is saved without them.
func (r *Record) keepNewest() []snapshot.Ref {
	var dropped []snapshot.Ref
	for len(r.Releases) > keepReleases {
		dropped = append(dropped, r.Releases[0].Snapshot)
		r.Releases = r.Releases[1:]
	}
	return dropped
}

func (r *Record) place(clusters []string) {
	for _, c := range clusters {
		if !slices.Contains(r.Placed, c) {
			r.Placed = append(r.Placed, c)
		}
	}
	slices.Sort(r.Placed)
}

// dispatchInFlight reports whether a deploy step started and the dispatcher
// has not answered yet (its clusters are unknown).
func (r *Record) dispatchInFlight() bool {
	if r.Run == nil {
		return false
	}
	for _, s := range r.Run.Steps {
		if s.Type == workflow.StepTypeDeploy && s.Phase == workflow.StepRunning && s.Clusters == nil {
			return true
		}
	}
	return false
}

// deletedEverywhere reports whether every cluster that held the
// application confirmed its removal, or is itself gone from the hub (a
// deleted ManagedCluster never answers).
func (r *Record) deletedEverywhere(gone func(cluster string) bool) bool {
	for _, c := range r.Placed {
		if !slices.Contains(r.Deleted, c) && !gone(c) {
			return false
		}
	}
	return true
}

// errConflict means another planner wrote the record first: reload and retry.
var errConflict = errors.New("run state changed concurrently")

// store reads and writes records by compare-and-set.
type store struct{ kv jetstream.KeyValue }

func recordKey(ns, app string) string { return ns + "." + app }

// load returns the record and its KV revision; (nil, 0) when there is none.
func (s store) load(ctx context.Context, ns, app string) (*Record, uint64, error) {
	e, err := s.kv.Get(ctx, recordKey(ns, app))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load run %s/%s: %w", ns, app, err)
	}
	rec := &Record{}
	if err := json.Unmarshal(e.Value(), rec); err != nil {
		return nil, 0, fmt.Errorf("load run %s/%s: %w", ns, app, err)
	}
	return rec, e.Revision(), nil
}

// save writes rec if the stored revision is still rev (0: must not exist).
func (s store) save(ctx context.Context, ns, app string, rec *Record, rev uint64) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("save run %s/%s: %w", ns, app, err)
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = s.kv.Create(ctx, recordKey(ns, app), data)
	} else {
		newRev, err = s.kv.Update(ctx, recordKey(ns, app), data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || bus.IsWrongLastSequence(err) {
		return 0, fmt.Errorf("save run %s/%s at revision %d: %w", ns, app, rev, errConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("save run %s/%s: %w", ns, app, err)
	}
	return newRev, nil
}

func (s store) delete(ctx context.Context, ns, app string) error {
	if err := s.kv.Delete(ctx, recordKey(ns, app)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete run %s/%s: %w", ns, app, err)
	}
	return nil
}
