package planner

import (
	"context"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// finalize removes a deleted Application from its clusters, then lets it
// go: the delete event goes out once, the status says how many clusters
// still have to confirm, and the finalizer is removed when none has to.
func (p *Planner) finalize(ctx context.Context, ps *pass) error {
	app, rec := ps.app, ps.rec
	if !slices.Contains(app.Finalizers, Finalizer) {
		return nil
	}
	if rec != nil && rec.dispatchInFlight() {
		// A deploy step started and the dispatcher has not said where it
		// went: letting go now could leave its objects behind.
		p.queue.AddAfter(ps.key, time.Second)
		return p.writeStatus(ctx, app, computeStatus(app, rec, nil, p.now(), p.outages(rec)))
	}
	if rec != nil && len(rec.Placed) > 0 && !rec.deletedEverywhere(p.clusterGone) {
		if !rec.Deleting {
			if err := p.announceDeletion(ctx, ps); err != nil {
				return err
			}
		}
		return p.writeStatus(ctx, app, computeStatus(app, rec, nil, p.now(), p.outages(rec)))
	}
	// The record goes before the finalizer: a planner stopped in between
	// finds the Application still there and finishes, rather than leaving a
	// record nobody deletes.
	if err := p.store.delete(ctx, app.Namespace, app.Name); err != nil {
		return err
	}
	if err := p.removeFinalizer(ctx, app); err != nil {
		return err
	}
	p.log.Info("application removed from every cluster", "app", ps.key)
	return nil
}

// announceDeletion publishes the application's deletion (the dispatcher
// sends each cluster a removal) and saves that it did. Publishing first is
// safe here, unlike a step's events (commit): the deletion is answered by
// reports the record need not expect, and sent again it removes nothing
// more. The outbox (flushed when the record was loaded) is emptied: no
// step event goes out after the deletion.
func (p *Planner) announceDeletion(ctx context.Context, ps *pass) error {
	app, rec := ps.app, ps.rec
	e := events.New(deletionID(rec), events.SourcePlanner, events.TypeApplicationDeleted, ps.key,
		&events.ApplicationDeletedData{Namespace: app.Namespace, Application: app.Name, UID: rec.UID})
	e.TraceParent = telemetry.TraceParent(rec.rootContext())
	if _, err := bus.Publish(ctx, p.js, bus.StepSubject(app.Namespace, app.Name), e); err != nil {
		return err
	}
	rec.Deleting, rec.Outbox = true, nil
	var fx effects
	if !rec.TraceDone && rec.Run != nil && !rec.Run.Finished() {
		rec.TraceDone = true
		fx = p.endRelease(rec, "deleted")
	}
	if _, err := p.store.save(ctx, app.Namespace, app.Name, rec, ps.rev); err != nil {
		return err
	}
	p.emit(ctx, fx)
	p.log.Info("application deleted, removing from clusters", "app", ps.key, "clusters", rec.Placed)
	return nil
}

// deletionID is the ID of the application's deletion event.
func deletionID(rec *Record) string { return rec.UID + ".deleted" }

// clusterGone reports whether the hub no longer has the ManagedCluster
// (its cache is synced before any reconcile).
func (p *Planner) clusterGone(name string) bool {
	if _, err := p.clusters.Get(name); !apierrors.IsNotFound(err) {
		return false
	}
	// Confirmed on the hub itself: the cache may lag a re-registration.
	_, err := p.dyn.Resource(clusterv1.ManagedClusterResource).Get(context.Background(), name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

func (p *Planner) addFinalizer(ctx context.Context, app *v1beta1.Application) error {
	return p.updateFinalizers(ctx, app, func(f []string) []string {
		if slices.Contains(f, Finalizer) {
			return f
		}
		return append(f, Finalizer)
	})
}

func (p *Planner) removeFinalizer(ctx context.Context, app *v1beta1.Application) error {
	return p.updateFinalizers(ctx, app, func(f []string) []string {
		return slices.DeleteFunc(f, func(s string) bool { return s == Finalizer })
	})
}

func (p *Planner) updateFinalizers(ctx context.Context, app *v1beta1.Application, change func([]string) []string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := p.appClient(app.Namespace).Get(ctx, app.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		before := u.GetFinalizers()
		after := change(slices.Clone(before))
		if slices.Equal(before, after) {
			return nil
		}
		u.SetFinalizers(after)
		_, err = p.appClient(app.Namespace).Update(ctx, u, metav1.UpdateOptions{})
		return err
	})
}
