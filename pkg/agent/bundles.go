package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Where a bundle directory keeps what became of each bundle, and the
// status bundle to carry back (StatusBundle in Outbox).
const (
	BundlesApplied = "applied"
	BundlesRefused = "refused"
	Outbox         = "outbox"
	StatusBundle   = "status.bundle"
)

// BundleResult is what became of one bundle file.
type BundleResult struct {
	File string
	// Applied: every release in it is applied; otherwise Err says why
	// nothing of it was (Retry: the bundle stays for the next pass).
	Applied bool
	Retry   bool
	Err     error
}

// watchBundles imports the bundles put in dir, every interval, until ctx
// ends; first it applies again what it applied before a restart (the
// newest releases it knows of are desired again: drift is repaired).
func (a *Agent) watchBundles(ctx context.Context, dir string, interval time.Duration) {
	for _, r := range a.ImportBundles(ctx, filepath.Join(dir, BundlesApplied)) {
		if r.Err != nil {
			a.log.Warn("bundle applied before, not applied again", "file", r.File, "err", r.Err)
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := a.WriteStatusBundle(dir); err != nil {
			a.log.Warn("write the status bundle", "err", err)
		}
		for _, r := range a.ImportBundles(ctx, dir) {
			switch {
			case r.Applied:
				a.log.Info("bundle applied", "file", r.File)
			case r.Retry:
				a.log.Warn("bundle not applied yet, trying again", "file", r.File, "err", r.Err)
			default:
				a.log.Warn("bundle refused, nothing of it applied", "file", r.File, "err", r.Err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ImportBundles applies each bundle file (*.bundle) in dir, oldest first,
// as if its work had arrived over NATS: every message must be this
// cluster's work, sealed by the hub and no older than what the cluster
// has, or nothing of the bundle is applied. An applied bundle moves to
// dir/applied, a refused one to dir/refused with a .reason file beside
// it; one that could not be applied yet stays. In dir/applied itself,
// bundles are applied again in place.
func (a *Agent) ImportBundles(ctx context.Context, dir string) []BundleResult {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.bundle"))
	sort.Slice(paths, func(i, j int) bool { return modTime(paths[i]).Before(modTime(paths[j])) })
	inPlace := filepath.Base(dir) == BundlesApplied
	var out []BundleResult
	for _, p := range paths {
		r := BundleResult{File: p}
		r.Retry, r.Err = a.importBundle(ctx, p)
		r.Applied = r.Err == nil
		if !inPlace && !r.Retry {
			r.File = settleBundle(p, r.Err)
		}
		out = append(out, r)
	}
	return out
}

// importBundle applies one bundle; retry says it may yet be applied.
func (a *Agent) importBundle(ctx context.Context, path string) (retry bool, err error) {
	if a.verifier == nil {
		return false, errors.New("bundles are applied only with --hub-work-key: nothing else says the hub sent them")
	}
	f, err := os.Open(path)
	if err != nil {
		return true, err
	}
	b, err := bundle.Decode(f)
	f.Close()
	if err != nil {
		return false, err
	}
	if b.Cluster != a.opts.Cluster {
		return false, fmt.Errorf("bundle for cluster %s, this is %s", b.Cluster, a.opts.Cluster)
	}
	// Everything is checked before anything is applied.
	type admitted struct {
		e *events.Event
		d *events.WorkData
	}
	var work []admitted
	newest := map[apply.App]int{} // the bundle's newest message per application
	for i, m := range b.Messages {
		msg := m.Msg()
		e, err := events.Decode(msg)
		if err != nil {
			return false, fmt.Errorf("message %d: %w", i, err)
		}
		d, err := a.admit(e, msg.Subject, msg.Header, msg.Data)
		if err != nil {
			return false, fmt.Errorf("message %d: %w", i, err)
		}
		app := apply.App{Namespace: d.Namespace, Name: d.Application, UID: d.UID}
		if j, ok := newest[app]; ok && work[j].d.Supersedes(d.AppRef, d.StepIndex) {
			return false, fmt.Errorf("message %d: work %s is older than message %d for the same application: a bundle is in order, nothing applied", i, e.ID, j)
		}
		newest[app] = len(work)
		newer := a.newerOnNATS(ctx, d)
		if newer == "" {
			newer, err = a.newerInCluster(ctx, d)
			if err != nil {
				return true, fmt.Errorf("message %d: %w", i, err)
			}
		}
		if newer != "" {
			a.metrics.work.WithLabelValues(a.opts.Cluster, "apply", "refused").Inc()
			return false, fmt.Errorf("message %d: work %s refused, nothing applied: %s", i, e.ID, newer)
		}
		work = append(work, admitted{e, d})
	}
	for _, w := range work {
		if a.applied(w.d) {
			continue // arrived over NATS too: one apply per release
		}
		if err := a.applyWork(ctx, w.e, w.d); err != nil {
			// Refused by the cluster (reported Failed to the hub) or not
			// applied yet (its API server not answering: again later).
			return !bus.IsTerminal(err), fmt.Errorf("work %s: %w", w.e.ID, err)
		}
	}
	return false, nil
}

// applied says whether d is the work this agent applied last for its
// application (the same release, attempt and step).
func (a *Agent) applied(d *events.WorkData) bool {
	if d.Delete {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := a.desired[apply.App{Namespace: d.Namespace, Name: d.Application, UID: d.UID}]
	return prev != nil && !prev.Delete && prev.Revision == d.Revision && prev.Attempt == d.Attempt && prev.StepIndex == d.StepIndex
}

// newerOnNATS says why d is older than the newest work the cluster's
// NATS holds for its application (empty: it is not, or NATS holds none):
// after a restart, the agent's memory of what it applied is empty.
func (a *Agent) newerOnNATS(ctx context.Context, d *events.WorkData) string {
	if d.Delete {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	app := apply.App{Namespace: d.Namespace, Name: d.Application, UID: d.UID}
	w, err := a.work(ctx, app)
	if err != nil || w == nil || w.UID != d.UID {
		return ""
	}
	if w.Supersedes(d.AppRef, d.StepIndex) {
		return fmt.Sprintf("release %s (attempt %d, step %d) is older than %s (attempt %d, step %d), sent over NATS", d.Release, d.Attempt, d.StepIndex, w.Release, w.Attempt, w.StepIndex)
	}
	return ""
}

// mark is what an agent records in an application's inventory of the
// work it applied (apply.Mark): what a bundle must not be older than,
// whatever the agent remembers after a restart and whatever the site's
// NATS still holds.
type mark struct {
	Release   string `json:"release"`
	Revision  int64  `json:"revision"`
	Attempt   int    `json:"attempt"`
	StepIndex int    `json:"step"`
}

func markOf(d *events.WorkData) string {
	b, _ := json.Marshal(mark{Release: d.Release, Revision: d.Revision, Attempt: d.Attempt, StepIndex: d.StepIndex})
	return string(b)
}

// newerInCluster says why d is older than the work last applied for its
// application, as its inventory records it ("": it is not, or none is).
func (a *Agent) newerInCluster(ctx context.Context, d *events.WorkData) (string, error) {
	if d.Delete {
		return "", nil
	}
	raw, uid, err := a.applier.MarkOf(ctx, apply.App{Namespace: d.Namespace, Name: d.Application, UID: d.UID})
	if err != nil {
		return "", fmt.Errorf("read what the cluster has of %s/%s: %w", d.Namespace, d.Application, err)
	}
	var m mark
	if raw == "" || uid != d.UID || json.Unmarshal([]byte(raw), &m) != nil {
		return "", nil
	}
	applied := events.WorkData{AppRef: events.AppRef{Release: m.Release, Revision: m.Revision, Attempt: m.Attempt}, StepIndex: m.StepIndex}
	if applied.Supersedes(d.AppRef, d.StepIndex) {
		return fmt.Sprintf("release %s (attempt %d, step %d) is older than %s (attempt %d, step %d), which the cluster has", d.Release, d.Attempt, d.StepIndex, m.Release, m.Attempt, m.StepIndex), nil
	}
	return "", nil
}

// settleBundle moves a bundle out of the way once decided, and returns
// where it went.
func settleBundle(path string, err error) string {
	sub := BundlesApplied
	if err != nil {
		sub = BundlesRefused
	}
	dir := filepath.Join(filepath.Dir(path), sub)
	if mkErr := os.MkdirAll(dir, 0o700); mkErr != nil {
		return path
	}
	to := filepath.Join(dir, filepath.Base(path))
	if err != nil {
		_ = os.WriteFile(strings.TrimSuffix(to, ".bundle")+".reason", []byte(err.Error()+"\n"), 0o600)
	}
	if os.Rename(path, to) != nil {
		return path
	}
	return to
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// keepForOutbox keeps a report as the status bundle will carry it.
func (a *Agent) keepForOutbox(subject string, e *events.Event) {
	if a.opts.BundleDir == "" {
		return
	}
	msg, err := events.Encode(subject, e)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.outbox[subject] = bundle.Message{Subject: msg.Subject, Header: msg.Header, Data: msg.Data}
	a.outboxChanged = true
}

// WriteStatusBundle writes dir/outbox/status.bundle, when a report changed
// since it last did: the newest report of each application and a
// heartbeat, signed with the agent's key, for a person to carry to the hub
// (kubectl flotilla bundle import). Replaced whole: a copy taken at any
// moment is a complete bundle.
func (a *Agent) WriteStatusBundle(dir string) (err error) {
	if a.opts.Key == nil {
		return nil
	}
	defer func() {
		if err != nil {
			a.mu.Lock()
			a.outboxChanged = true // again next time
			a.mu.Unlock()
		}
	}()
	a.mu.Lock()
	if !a.outboxChanged {
		a.mu.Unlock()
		return nil
	}
	subjects := make([]string, 0, len(a.outbox))
	for s := range a.outbox {
		subjects = append(subjects, s)
	}
	sort.Strings(subjects)
	msgs := make([]bundle.Message, 0, len(subjects)+1)
	for _, s := range subjects {
		msgs = append(msgs, a.outbox[s])
	}
	a.outboxChanged = false
	a.mu.Unlock()
	now := time.Now()
	hb := events.New(fmt.Sprintf("%s.heartbeat.%d", a.opts.Cluster, now.UnixNano()), events.SourceAgent(a.opts.Cluster), events.TypeClusterHeartbeat, a.opts.Cluster,
		&events.ClusterJoinData{Cluster: a.opts.Cluster, KubernetesVersion: a.version, HeartbeatMillis: max(a.opts.Heartbeat.Milliseconds(), 1)})
	subject := bus.ClusterSubject(a.opts.Cluster, "heartbeat")
	m, err := events.Encode(subject, hb)
	if err != nil {
		return err
	}
	msgs = append(msgs, bundle.Message{Subject: m.Subject, Header: m.Header, Data: m.Data})
	s, err := bundle.NewStatus(a.opts.Cluster, a.opts.Key, now, msgs)
	if err != nil {
		return err
	}
	out := filepath.Join(dir, Outbox)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(out, ".status-*")
	if err != nil {
		return err
	}
	if err := s.Encode(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(out, StatusBundle)); err != nil {
		return err
	}
	a.log.Info("status bundle written", "file", filepath.Join(out, StatusBundle), "reports", len(subjects))
	return nil
}
