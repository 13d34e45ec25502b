package planner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// laneAckPending is how many of one cluster's reports may wait for the
// planner at once: enough for every application of a busy cluster, and the
// most one cluster can hold up.
const laneAckPending = 32

// lanes consume the clusters' reports, each ManagedCluster's through a
// durable consumer of its own on the status stream: one cluster's flood, or
// its reports retried on a release that never comes, fill only its own
// lane's budget of unacknowledged messages, never another cluster's. A
// report of a cluster the hub does not know is never read: only an agent of
// a ManagedCluster has work to report on. The ManagedCluster informer only
// enqueues names; one worker opens and closes lanes.
type lanes struct {
	p       *Planner
	queue   workqueue.TypedRateLimitingInterface[string]
	mu      sync.Mutex
	running map[string]lane
}

type lane struct {
	cc   jetstream.ConsumeContext
	cons jetstream.Consumer
}

func newLanes(p *Planner) *lanes {
	return &lanes{p: p, running: map[string]lane{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "report-lanes"}),
	}
}

// enqueue is the ManagedCluster informer's handler.
func (l *lanes) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		l.queue.Add(key)
	}
}

// run opens and closes lanes until ctx ends, then stops them all.
func (l *lanes) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		l.queue.ShutDown()
	}()
	for {
		name, quit := l.queue.Get()
		if quit {
			break
		}
		if err := l.sync(ctx, name); err != nil && ctx.Err() == nil {
			l.p.log.Warn("report lane", "cluster", name, "err", err)
			l.queue.AddRateLimited(name)
		} else {
			l.queue.Forget(name)
		}
		l.queue.Done(name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range l.running {
		ln.cc.Stop()
	}
}

// sync opens the lane of a cluster the hub has, and closes (and deletes)
// the lane of one it no longer has.
func (l *lanes) sync(ctx context.Context, name string) error {
	_, err := l.p.clusters.Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return l.close(ctx, name)
	case err != nil:
		return err
	}
	l.mu.Lock()
	ln, open := l.running[name]
	l.mu.Unlock()
	if open {
		// Another replica may have deleted it (the cluster left and came back).
		if _, err := ln.cons.Info(ctx); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
		ln.cc.Stop()
	}
	cons, err := l.p.js.CreateOrUpdateConsumer(ctx, bus.StreamStatus, jetstream.ConsumerConfig{
		Durable:       bus.ReportLane(l.p.opts.Consumer, name),
		FilterSubject: bus.StatusFilter(name),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: laneAckPending,
		MaxDeliver:    bus.MaxDeliver,
	})
	if err != nil {
		return fmt.Errorf("consumer of cluster %s's reports: %w", name, err)
	}
	cc, err := bus.Consume(ctx, cons, l.p.log, l.p.handleReport, bus.PullMax(laneAckPending))
	if err != nil {
		return err
	}
	l.p.metrics.consumers.Watch(cons)
	l.mu.Lock()
	l.running[name] = lane{cc: cc, cons: cons}
	l.mu.Unlock()
	return nil
}

func (l *lanes) close(ctx context.Context, name string) error {
	l.mu.Lock()
	ln, open := l.running[name]
	delete(l.running, name)
	l.mu.Unlock()
	if open {
		ln.cc.Stop()
		l.p.metrics.consumers.Unwatch(ln.cons)
	}
	err := l.p.js.DeleteConsumer(ctx, bus.StreamStatus, bus.ReportLane(l.p.opts.Consumer, name))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete the consumer of cluster %s's reports: %w", name, err)
	}
	return nil
}
