package dispatcher

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
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

// joinWith publishes a join of cluster proposing labels.
func (f *fixture) joinWith(cluster string, labels map[string]string) {
	f.t.Helper()
	e := events.New(fmt.Sprintf("%s.join.%d", cluster, time.Now().UnixNano()), events.SourceAgent(cluster), events.TypeClusterJoin, cluster,
		&events.ClusterJoinData{Cluster: cluster, KubernetesVersion: "v1.37.0", HeartbeatMillis: 1000, Labels: labels})
	if _, err := bus.Publish(f.ctx, f.js, bus.ClusterSubject(cluster, "join"), e); err != nil {
		f.t.Fatal(err)
	}
}

// Joins are anyone's to send who holds the bootstrap credential: one that
// names a cluster the hub could not make, or labels itself into a cluster
// set (which ScopeGrants name), is refused for good with the reason and
// creates nothing; and once MaxPending clusters wait to be accepted, a new
// cluster's join is refused until an admin accepts or deletes some.
func TestJoinsAreBounded(t *testing.T) {
	// The hub is shared: clusters other tests left waiting count too.
	existing, err := testHub(t).Resource(clusterv1.ManagedClusterResource).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	limit := 2
	for i := range existing.Items {
		if accepted, _, _ := unstructured.NestedBool(existing.Items[i].Object, "spec", "hubAcceptsClient"); !accepted {
			limit++
		}
	}
	f := start(t, Options{MaxPending: limit}, natstest.Options{})
	for _, tt := range []struct {
		cluster string
		labels  map[string]string
		why     string
	}{
		{"Bad_Name", nil, "not a DNS-1123 label"},
		{"set-climber", map[string]string{clusterv1beta2.LabelClusterSet: "production"}, "is an admin's to set"},
		{"bad-label", map[string]string{"env": "a b"}, "label env=a b"},
	} {
		f.joinWith(tt.cluster, tt.labels)
		eventually.True(t, 30*time.Second, tt.cluster+"'s join refused: "+tt.why, func() (bool, error) {
			return f.logged("join refused", tt.why), nil
		})
		if _, err := f.cluster(tt.cluster); !apierrors.IsNotFound(err) {
			t.Errorf("a refused join made ManagedCluster %s: %v", tt.cluster, err)
		}
	}
	for _, c := range []string{"pend-1", "pend-2"} {
		f.joinWith(c, map[string]string{"env": "test"})
		t.Cleanup(func() { f.deleteCluster(c) })
		f.waitAcceptance(c, "false")
	}
	f.joinWith("pend-3", nil)
	eventually.True(t, 30*time.Second, "the third pending cluster's join refused", func() (bool, error) {
		return f.logged("join refused", "cluster=pend-3", fmt.Sprintf("%d clusters wait to be accepted", limit)), nil
	})
	if _, err := f.cluster("pend-3"); !apierrors.IsNotFound(err) {
		t.Errorf("a join past the cap made its ManagedCluster: %v", err)
	}
	f.accept("pend-1")
	f.waitAcceptance("pend-1", "true")
	f.joinWith("pend-3", nil)
	t.Cleanup(func() { f.deleteCluster("pend-3") })
	f.waitAcceptance("pend-3", "false")
}

// A ManagedCluster a join created that no admin accepts within
// PendingTTL is deleted (what a flood of joins leaves frees its places);
// one accepted once is kept when it stops being accepted.
func TestPendingClustersExpire(t *testing.T) {
	f := start(t, Options{PendingTTL: 2 * time.Second, ReconcileInterval: 200 * time.Millisecond}, natstest.Options{})
	f.joinWith("expire-never", nil)
	f.joinWith("expire-kept", nil)
	t.Cleanup(func() { f.deleteCluster("expire-kept") })
	f.waitAcceptance("expire-kept", "false")
	f.accept("expire-kept")
	f.waitAcceptance("expire-kept", "true")
	eventually.True(t, 30*time.Second, "the never accepted cluster deleted", func() (bool, error) {
		_, err := f.cluster("expire-never")
		return apierrors.IsNotFound(err), nil
	})
	if _, err := f.hub.Resource(clusterv1.ManagedClusterResource).Patch(f.ctx, "expire-kept", types.MergePatchType,
		[]byte(`{"spec":{"hubAcceptsClient":false}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitAcceptance("expire-kept", "false")
	time.Sleep(3 * time.Second)
	if _, err := f.cluster("expire-kept"); err != nil {
		t.Errorf("a cluster accepted once was expired when it stopped being accepted: %v", err)
	}
}

// A site that answers whether its link is up and nothing else (one that
// lies, or one half broken) holds up only its own clusters' acceptance:
// a cluster at the hub accepted after one at the site is told at once,
// while the site's waits on the link.
func TestASiteThatDoesNotAnswerHoldsUpOnlyItsOwnClusters(t *testing.T) {
	srv := natstest.NewWith(t, natstest.Options{})
	nc, js := srv.JetStream(t)
	if _, err := nc.Subscribe("$JS.silent.API.>", func(m *nats.Msg) {
		if m.Subject == "$JS.silent.API.INFO" {
			_ = m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.account_info_response"}`))
		}
	}); err != nil {
		t.Fatal(err)
	}
	opts := Options{CheckInterval: time.Hour, Sites: []string{"silent"}, SiteSetup: bus.SetupOptions{Memory: true},
		SiteConn: func(string) (*nats.Conn, error) { return nats.Connect(srv.URL()) }}
	f := run(t, opts, js, js)
	create := func(name string, labels map[string]any) {
		t.Helper()
		mc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": clusterv1.GroupVersion.String(), "kind": "ManagedCluster",
			"metadata": map[string]any{"name": name, "labels": labels},
			"spec":     map[string]any{"hubAcceptsClient": true},
		}}
		if _, err := f.hub.Resource(clusterv1.ManagedClusterResource).Create(f.ctx, mc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.deleteCluster(name) })
	}
	create("silent-1", map[string]any{"flotilla.dev/site": "silent"})
	time.Sleep(500 * time.Millisecond) // its relay is under way, waiting on the link
	accepted := time.Now()
	create("hub-1", nil)
	eventually.True(t, 10*time.Second, "the hub's cluster told it is accepted", func() (bool, error) {
		got, err := f.acceptance("hub-1")
		return got == "true", err
	})
	t.Logf("accepted -> the hub's cluster told so: %v, the silent site's cluster waiting", time.Since(accepted).Round(time.Millisecond))
	if got, _ := f.acceptance("silent-1"); got == "true" {
		t.Error("the silent site's cluster was told it is accepted with no consumer made there")
	}
}
