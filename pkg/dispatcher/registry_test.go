package dispatcher

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// acceptance is what the clusters bucket tells cluster's agent ("" when nothing).
func (f *fixture) acceptance(name string) (string, error) {
	kv, err := f.js.KeyValue(f.ctx, bus.BucketClusters)
	if err != nil {
		return "", err
	}
	entry, err := kv.Get(f.ctx, bus.AcceptedKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(entry.Value()), nil
}

func (f *fixture) waitAcceptance(name, want string) {
	f.t.Helper()
	eventually.True(f.t, 60*time.Second, fmt.Sprintf("%s's agent told accepted=%s", name, want), func() (bool, error) {
		got, err := f.acceptance(name)
		if err != nil {
			return false, err
		}
		return got == want, fmt.Errorf("accepted=%q", got)
	})
}

func (f *fixture) accept(name string) {
	f.t.Helper()
	if _, err := f.hub.Resource(clusterv1.ManagedClusterResource).Patch(f.ctx, name, types.MergePatchType,
		[]byte(`{"spec":{"hubAcceptsClient":true}}`), metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// The hub's acceptance reaches the agent (a key in the clusters bucket)
// and the cluster's status, through a worker that retries: with the bucket
// gone, the relay fails, is retried, and arrives once the bucket is back,
// with nothing else touching the ManagedCluster meanwhile.
func TestAcceptanceIsRelayedAndRetried(t *testing.T) {
	// No periodic status writes: the retry alone must bring the relay.
	f := start(t, Options{CheckInterval: time.Hour}, natstest.Options{})
	f.beat("relay-c1", "join", time.Minute)
	t.Cleanup(func() { f.deleteCluster("relay-c1") })
	f.waitAcceptance("relay-c1", "false")
	f.waitCondition("relay-c1", clusterv1.ConditionHubAccepted, metav1.ConditionFalse)

	if err := f.js.DeleteKeyValue(f.ctx, bus.BucketClusters); err != nil {
		t.Fatal(err)
	}
	f.accept("relay-c1")
	eventually.True(t, 60*time.Second, "the failed relay retried", func() (bool, error) {
		return f.logged("relay acceptance, retrying", "cluster=relay-c1"), nil
	})
	if err := bus.Setup(f.ctx, f.js, bus.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitAcceptance("relay-c1", "true")
	// The worker wrote the status once the relay went through.
	f.waitCondition("relay-c1", clusterv1.ConditionHubAccepted, metav1.ConditionTrue)

	// A cluster deleted on the hub is told it is no longer accepted.
	f.deleteCluster("relay-c1")
	f.waitAcceptance("relay-c1", "false")
}

// A cluster whose heartbeats stop turns AVAILABLE Unknown once three have
// been missed, never before: judged from the last beat's time, however late
// a loaded machine notices.
func TestAvailabilityAfterMissedHeartbeats(t *testing.T) {
	const every = 500 * time.Millisecond
	f := start(t, Options{AutoAccept: true, CheckInterval: 100 * time.Millisecond}, natstest.Options{})
	last := f.beat("hb-c1", "join", every)
	t.Cleanup(func() { f.deleteCluster("hb-c1") })
	stop := make(chan struct{})
	beating := make(chan time.Time)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				beating <- last
				return
			case <-tick.C:
				at, err := f.send("hb-c1", "heartbeat", every)
				if err != nil {
					t.Errorf("heartbeat: %v", err)
					continue
				}
				last = at
			}
		}
	}()
	f.waitCondition("hb-c1", clusterv1.ConditionJoined, metav1.ConditionTrue)
	f.waitCondition("hb-c1", clusterv1.ConditionAvailable, metav1.ConditionTrue)
	close(stop)
	lastBeat := <-beating
	f.waitCondition("hb-c1", clusterv1.ConditionAvailable, metav1.ConditionUnknown)
	if gap := time.Since(lastBeat); gap < 3*every {
		t.Errorf("AVAILABLE Unknown %v after the last heartbeat, before three were missed (%v)", gap, 3*every)
	}
	// Away, but joined still.
	f.waitCondition("hb-c1", clusterv1.ConditionJoined, metav1.ConditionTrue)
}
