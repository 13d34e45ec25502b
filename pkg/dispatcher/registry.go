package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/grant"
	"github.com/flotilla-dev/flotilla/pkg/site"
)

// seen is a cluster's last heartbeat, kept in the clusters KV bucket so every
// dispatcher replica judges availability alike.
type seen struct {
	At                time.Time `json:"at"`
	HeartbeatMillis   int64     `json:"heartbeatMillis"`
	KubernetesVersion string    `json:"kubernetesVersion,omitempty"`
	Problem           string    `json:"problem,omitempty"`
}

// handleCluster records a join or heartbeat; a join of an unknown cluster
// creates its ManagedCluster, accepted only with --auto-accept.
func (d *Dispatcher) handleCluster(ctx context.Context, e *events.Event) error {
	data, ok := e.Data.(*events.ClusterJoinData)
	if !ok {
		return bus.Terminate(fmt.Errorf("dispatcher does not handle %s on the clusters stream", e.Type))
	}
	kind := "heartbeat"
	if e.Type == events.TypeClusterJoin {
		kind = "join"
	}
	if want := bus.ClusterSubject(data.Cluster, kind); e.Topic != want {
		return bus.Terminate(fmt.Errorf("%s of cluster %s arrived on %s, not %s", kind, data.Cluster, e.Topic, want))
	}
	if e.Type == events.TypeClusterJoin {
		if err := validJoin(data); err != nil {
			d.log.Warn("join refused", "cluster", data.Cluster, "err", err)
			return bus.Terminate(err)
		}
	}
	issuing := e.Type == events.TypeClusterJoin && d.opts.Issuer != nil
	if issuing {
		// Any joining agent may publish any cluster's join (they share the
		// bootstrap credential): only the registered key speaks for one.
		if err := d.verifyJoin(ctx, e.ID, data); err != nil {
			d.log.Warn("join refused", "cluster", data.Cluster, "err", err)
			return bus.Terminate(err)
		}
	}
	if _, err := d.clusters.Get(data.Cluster); apierrors.IsNotFound(err) {
		err := validJoin(data)
		if err == nil {
			err = d.roomForPending()
		}
		if err != nil {
			d.log.Warn(kind+" refused", "cluster", data.Cluster, "err", err)
			return bus.Terminate(err)
		}
		if err := d.createCluster(ctx, data); err != nil {
			return err
		}
	}
	if issuing {
		// Registered once the ManagedCluster exists: a relay that finds it
		// gone forgets the key.
		if err := d.checkJoin(ctx, e.ID, data); err != nil {
			if bus.IsRetry(err) {
				return err
			}
			d.log.Warn("join refused", "cluster", data.Cluster, "err", err)
			return bus.Terminate(err)
		}
		// A join proves only the key: availability comes from heartbeats,
		// which only the agent's own credential may send.
		d.log.Info("cluster asked to join", "cluster", data.Cluster, "nkey", data.NKey)
		return d.updateStatus(ctx, data.Cluster, time.Now())
	}
	s, _ := json.Marshal(seen{At: e.Time, HeartbeatMillis: data.HeartbeatMillis, KubernetesVersion: data.KubernetesVersion, Problem: data.Problem})
	if _, err := d.kv.Put(ctx, bus.SeenKey(data.Cluster), s); err != nil {
		return err
	}
	if e.Type == events.TypeClusterJoin {
		d.log.Info("cluster joined", "cluster", data.Cluster, "version", data.KubernetesVersion)
		return d.updateStatus(ctx, data.Cluster, time.Now())
	}
	return nil
}

// AgentKeyAnnotation on a ManagedCluster is the public key its agent's
// credential is for: set by the join that created it (or by an admin, on
// a ManagedCluster made before its agent joined); joins signed with
// another key are refused.
const AgentKeyAnnotation = "flotilla.dev/agent-nkey"

// validJoin refuses a join the hub could not make a ManagedCluster of,
// for good: a name that is not a DNS-1123 label (it is spliced into
// subjects and credentials), labels the API server would refuse, or
// labels that would place the cluster where only an admin may (a cluster
// set, which ScopeGrants name; Flotilla's own).
func validJoin(data *events.ClusterJoinData) error {
	if msgs := validation.IsDNS1123Label(data.Cluster); len(msgs) > 0 {
		return fmt.Errorf("join of cluster %q refused: its name is not a DNS-1123 label (%s)", data.Cluster, strings.Join(msgs, "; "))
	}
	for k, v := range data.Labels {
		if msgs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(msgs) > 0 {
			return fmt.Errorf("join of cluster %s refused: label %s=%s: %s", data.Cluster, k, v, strings.Join(msgs, "; "))
		}
		if k == site.Label {
			continue // where its agent pulls from: only a site the dispatcher serves (--site), shown before accepting
		}
		if prefix, _, ok := strings.Cut(k, "/"); ok && (strings.HasSuffix(prefix, "open-cluster-management.io") || strings.HasSuffix(prefix, "flotilla.dev")) {
			return fmt.Errorf("join of cluster %s refused: label %s is an admin's to set, not a joining agent's", data.Cluster, k)
		}
	}
	return nil
}

// roomForPending refuses a new cluster's join while MaxPending clusters
// wait to be accepted.
func (d *Dispatcher) roomForPending() error {
	limit := d.opts.MaxPending
	if limit <= 0 {
		limit = 100
	}
	all, err := d.clusters.List(labels.Everything())
	if err != nil {
		return err
	}
	pending := 0
	for _, obj := range all {
		if !acceptedBy(obj) {
			pending++
		}
	}
	if pending >= limit {
		return fmt.Errorf("%d clusters wait to be accepted (--max-pending-clusters %d): accept or delete some before more join", pending, limit)
	}
	return nil
}

// CreatedByAnnotation marks a ManagedCluster a join created ("join") and
// no admin accepted yet (removed on its first acceptance): one left so for
// Options.PendingTTL is deleted.
const CreatedByAnnotation = "flotilla.dev/created-by"

// expirePending deletes the ManagedClusters joins created that waited
// longer than PendingTTL to be accepted.
func (d *Dispatcher) expirePending(ctx context.Context) error {
	ttl := d.opts.PendingTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	all, err := d.clusters.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, obj := range all {
		m, err := meta.Accessor(obj)
		if err != nil || acceptedBy(obj) || m.GetAnnotations()[CreatedByAnnotation] != "join" || time.Since(m.GetCreationTimestamp().Time) < ttl {
			continue
		}
		uid := m.GetUID()
		err = d.dyn.Resource(clusterv1.ManagedClusterResource).Delete(ctx, m.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete ManagedCluster %s, never accepted: %w", m.GetName(), err)
		}
		if err == nil {
			d.log.Info("cluster never accepted: its ManagedCluster deleted", "cluster", m.GetName(), "waited", time.Since(m.GetCreationTimestamp().Time).Round(time.Second))
		}
	}
	return nil
}

func (d *Dispatcher) createCluster(ctx context.Context, data *events.ClusterJoinData) error {
	lbls := map[string]any{"name": data.Cluster}
	for k, v := range data.Labels {
		lbls[k] = v
	}
	meta := map[string]any{"name": data.Cluster, "labels": lbls}
	annotations := map[string]any{CreatedByAnnotation: "join"}
	if data.NKey != "" {
		// For the admin to compare with the key the agent logs, before
		// accepting: the first join's key is the one its credential is for.
		annotations[AgentKeyAnnotation] = data.NKey
	}
	meta["annotations"] = annotations
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": clusterv1.GroupVersion.String(), "kind": "ManagedCluster",
		"metadata": meta,
		"spec":     map[string]any{"hubAcceptsClient": d.opts.AutoAccept, "leaseDurationSeconds": max((data.HeartbeatMillis+999)/1000, 1)},
	}}
	_, err := d.dyn.Resource(clusterv1.ManagedClusterResource).Create(ctx, mc, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ManagedCluster %s: %w", data.Cluster, err)
	}
	if err == nil {
		d.log.Info("new cluster registered", "cluster", data.Cluster, "accepted", d.opts.AutoAccept)
	}
	return nil
}

// processNext relays one queued cluster's acceptance, retrying a failure
// with the queue's rate limit; false once the queue shuts down.
func (d *Dispatcher) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	name, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(name)
	err := d.relayAcceptance(ctx, name)
	if serr := d.syncSites(ctx); serr != nil && ctx.Err() == nil {
		d.log.Warn("sites' sources, checked again when the link returns", "err", serr)
	}
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("relay acceptance, retrying", "cluster", name, "err", err)
		}
		q.AddRateLimited(name)
		return true
	}
	q.Forget(name)
	return true
}

// queueOf is the queue a cluster's acceptance is relayed from: its site's
// own, or the hub's.
func (d *Dispatcher) queueOf(cluster string) workqueue.TypedRateLimitingInterface[string] {
	var name string
	if obj, err := d.clusters.Get(cluster); err == nil {
		name = siteOf(obj)
	} else {
		d.mu.Lock()
		name = d.lastSite[cluster]
		d.mu.Unlock()
	}
	if q, ok := d.siteQueues[name]; ok {
		return q
	}
	return d.queue
}

// relayAcceptance tells a cluster's agent whether the hub accepts it (a
// KV entry its agent reads) and writes the cluster's status, once per
// change of acceptance.
func (d *Dispatcher) relayAcceptance(ctx context.Context, name string) error {
	obj, err := d.clusters.Get(name)
	gone := apierrors.IsNotFound(err)
	if err != nil && !gone {
		return fmt.Errorf("read ManagedCluster %s: %w", name, err)
	}
	accepted := !gone && acceptedBy(obj)
	key := ""
	if accepted {
		key = annotatedKey(obj)
	}
	d.mu.Lock()
	prev, known := d.accepted[name]
	relayedKey := d.relayedKey[name]
	d.mu.Unlock()
	// Relayed already, unless the key its credential is for changed since
	// (named on the ManagedCluster after the relay read it without).
	if known && prev == accepted && relayedKey == key {
		return nil
	}
	// Never stuck on one cluster: a server that does not answer is
	// retried with the queue's backoff.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The agent may only pull its consumer, not make one: the hub makes it
	// before telling the agent it is accepted, and removes it after telling
	// it it is not (an agent no longer accepted can pull nothing). An
	// agent at a site pulls the site's copy of its work: its consumer is
	// made there, over the link (while it is down, this waits for it).
	js, where, err := d.workJetStream(name, obj)
	if err != nil {
		return err
	}
	if accepted {
		if _, err := js.CreateOrUpdateConsumer(ctx, bus.StreamWork, bus.AgentConsumerConfig(name)); err != nil {
			return fmt.Errorf("work consumer of cluster %s%s: %w", name, where, err)
		}
		if err := d.issue(ctx, name, obj); err != nil {
			return err
		}
		if m, err := meta.Accessor(obj); err == nil && m.GetAnnotations()[CreatedByAnnotation] == "join" {
			// Accepted once: never expired as a join left waiting, even if
			// an admin stops accepting it for a while.
			patch := []byte(`{"metadata":{"annotations":{"` + CreatedByAnnotation + `":null}}}`)
			if _, err := d.dyn.Resource(clusterv1.ManagedClusterResource).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("ManagedCluster %s: %w", name, err)
			}
		}
	}
	if _, err := d.kv.Put(ctx, bus.AcceptedKey(name), []byte(fmt.Sprint(accepted))); err != nil {
		return fmt.Errorf("relay acceptance of cluster %s: %w", name, err)
	}
	if !accepted {
		if err := d.revoke(ctx, name, gone); err != nil {
			return err
		}
		if err := js.DeleteConsumer(ctx, bus.StreamWork, bus.AgentConsumer(name)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("remove the work consumer of cluster %s%s: %w", name, where, err)
		}
	}
	d.log.Info("cluster acceptance relayed", "cluster", name, "accepted", accepted)
	if err := d.updateStatus(ctx, name, time.Now()); err != nil {
		// Recorded as relayed only once the status is written too: the
		// retry puts the same value again, which the agent reads alike.
		return fmt.Errorf("status of cluster %s: %w", name, err)
	}
	d.mu.Lock()
	if gone {
		delete(d.accepted, name) // a cluster registered again starts anew
		delete(d.relayedKey, name)
	} else {
		d.accepted[name], d.relayedKey[name] = accepted, key
	}
	d.mu.Unlock()
	return nil
}

// workJetStream is where a cluster's agent pulls its work: the hub's
// JetStream, or its site's (named in where, for errors).
func (d *Dispatcher) workJetStream(cluster string, obj runtime.Object) (jetstream.JetStream, string, error) {
	name := siteOf(obj)
	if obj == nil {
		// Deleted: its consumer is where it was.
		d.mu.Lock()
		name = d.lastSite[cluster]
		d.mu.Unlock()
	}
	if name == "" || d.sites == nil {
		return d.js, "", nil
	}
	js, err := d.sites.JetStream(name)
	if err != nil {
		return nil, "", fmt.Errorf("cluster %s: label %s: %w (the dispatcher's --site)", cluster, site.Label, err)
	}
	return js, " at site " + name, nil
}

// LiveReadConn is the connection a cluster's agent is asked for a live
// read over: its site's account at the hub for a cluster at a site (no
// other site, nor the services' account, hears it), nil for a cluster at
// the hub or one not known.
func (d *Dispatcher) LiveReadConn(cluster string) *nats.Conn {
	d.mu.Lock()
	sites := d.sites
	d.mu.Unlock()
	obj, err := d.clusters.Get(cluster)
	if err != nil || sites == nil {
		return nil
	}
	name := siteOf(obj)
	if name == "" {
		return nil
	}
	nc, _ := sites.Conn(name)
	return nc
}

// siteOf is the site a ManagedCluster's label names ("" none).
func siteOf(obj runtime.Object) string {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u == nil {
		return ""
	}
	return u.GetLabels()[site.Label]
}

func metaName(obj runtime.Object) string {
	if u, ok := obj.(*unstructured.Unstructured); ok && u != nil {
		return u.GetName()
	}
	return ""
}

// syncSites tells the sites which clusters are where (their labels).
func (d *Dispatcher) syncSites(ctx context.Context) error {
	if d.sites == nil {
		return nil
	}
	objs, err := d.clusters.List(labels.Everything())
	if err != nil {
		return err
	}
	members := map[string][]string{}
	d.mu.Lock()
	for _, o := range objs {
		if s := siteOf(o); s != "" {
			members[s] = append(members[s], metaName(o))
			d.lastSite[metaName(o)] = s
		}
	}
	d.mu.Unlock()
	return d.sites.Sync(ctx, members)
}

// siteReconnected relays acceptance again to every cluster of a site whose
// link returned: what failed while it was down waits no longer for the
// queue's backoff.
func (d *Dispatcher) siteReconnected(name string) {
	objs, err := d.clusters.List(labels.Everything())
	if err != nil {
		return
	}
	for _, o := range objs {
		if siteOf(o) == name {
			c := metaName(o)
			d.mu.Lock()
			delete(d.accepted, c)
			d.mu.Unlock()
			d.queueOf(c).Add(c)
		}
	}
}

// acceptedBy says whether a ManagedCluster is accepted by the hub: it says
// so and is not being deleted.
func acceptedBy(obj runtime.Object) bool {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetDeletionTimestamp() != nil {
		return false
	}
	accepted, _, _ := unstructured.NestedBool(u.Object, "spec", "hubAcceptsClient")
	return accepted
}

// knownScope is what the caches know of the clusters and grants.
func (d *Dispatcher) knownScope() ([]Cluster, grant.Grants, error) {
	objs, err := d.clusters.List(labels.Everything())
	if err != nil {
		return nil, grant.Grants{}, err
	}
	var lists [3][]runtime.Object
	for i, l := range d.grants {
		if lists[i], err = l.List(labels.Everything()); err != nil {
			return nil, grant.Grants{}, err
		}
	}
	return scopeOf(objs, lists)
}

// liveScope reads the ManagedClusters and grants from the hub itself, not the cache.
func (d *Dispatcher) liveScope(ctx context.Context) ([]Cluster, grant.Grants, error) {
	var lists [4][]runtime.Object
	for i, res := range []schema.GroupVersionResource{clusterv1.ManagedClusterResource,
		grantv1alpha1.ScopeGrantResource, clusterv1beta2.ManagedClusterSetResource, clusterv1beta2.ManagedClusterSetBindingResource} {
		list, err := d.dyn.Resource(res).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, grant.Grants{}, fmt.Errorf("list %s: %w", res.Resource, err)
		}
		for j := range list.Items {
			lists[i] = append(lists[i], &list.Items[j])
		}
	}
	return scopeOf(lists[0], [3][]runtime.Object{lists[1], lists[2], lists[3]})
}

func scopeOf(clusters []runtime.Object, grants [3][]runtime.Object) ([]Cluster, grant.Grants, error) {
	cs, err := clustersOf(clusters)
	if err != nil {
		return nil, grant.Grants{}, err
	}
	g, err := grant.FromObjects(grants[0], grants[1], grants[2])
	return cs, g, err
}

func clustersOf(objs []runtime.Object) ([]Cluster, error) {
	out := make([]Cluster, 0, len(objs))
	for _, o := range objs {
		mc, err := toCluster(o)
		if err != nil {
			return nil, err
		}
		out = append(out, Cluster{Name: mc.Name, Accepted: mc.Spec.HubAcceptsClient && mc.DeletionTimestamp == nil, Labels: mc.Labels})
	}
	return out, nil
}

func toCluster(obj runtime.Object) (*clusterv1.ManagedCluster, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T", obj)
	}
	mc := &clusterv1.ManagedCluster{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, mc); err != nil {
		return nil, fmt.Errorf("decode ManagedCluster %s: %w", u.GetName(), err)
	}
	return mc, nil
}

func (d *Dispatcher) checkAvailability(ctx context.Context) error {
	objs, err := d.clusters.List(labels.Everything())
	if err != nil {
		return err
	}
	now := time.Now()
	var errs []error
	for _, o := range objs {
		if err := d.updateStatus(ctx, o.(*unstructured.Unstructured).GetName(), now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// siteLink is the link of a cluster's site to the hub, when it is down.
type siteLink struct {
	site  string
	since time.Time
}

// linkDown is the cluster's site's link if it is down (nil: up, or no site).
func (d *Dispatcher) linkDown(mc *clusterv1.ManagedCluster) *siteLink {
	name := mc.Labels[site.Label]
	if name == "" || d.sites == nil {
		return nil
	}
	up, since, known := d.sites.Link(name)
	if !known || up {
		return nil
	}
	return &siteLink{site: name, since: since}
}

// clusterConditions computes a ManagedCluster's conditions from its spec,
// its last heartbeat and, for a cluster at a site, whether the site's link
// is down. Pure.
func clusterConditions(mc *clusterv1.ManagedCluster, last *seen, missed int, now time.Time, down *siteLink) []metav1.Condition {
	conds := append([]metav1.Condition(nil), mc.Status.Conditions...)
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg,
			ObservedGeneration: mc.Generation, LastTransitionTime: metav1.NewTime(now).Rfc3339Copy()})
	}
	accepted := mc.Spec.HubAcceptsClient
	if accepted {
		set(clusterv1.ConditionHubAccepted, metav1.ConditionTrue, "HubClusterAdminAccepted", "accepted by the hub")
	} else {
		set(clusterv1.ConditionHubAccepted, metav1.ConditionFalse, "HubClusterAdminDenied", "not accepted: kubectl flotilla cluster accept "+mc.Name)
	}
	alive := false
	switch {
	case down != nil:
		// Whatever it last said, nothing it says reaches the hub now.
		set(clusterv1.ConditionAvailable, metav1.ConditionUnknown, "SiteLinkDown",
			fmt.Sprintf("the link from site %s to the hub is down since %s: the cluster's reports wait in its site", down.site, down.since.UTC().Format(time.RFC3339)))
	case last != nil && last.HeartbeatMillis > 0:
		interval := time.Duration(last.HeartbeatMillis) * time.Millisecond
		window := time.Duration(missed) * interval
		alive = now.Sub(last.At) <= window
		switch {
		case alive && last.Problem != "":
			set(clusterv1.ConditionAvailable, metav1.ConditionFalse, "ManagedClusterKubeAPIServerUnavailable", last.Problem)
		case alive:
			set(clusterv1.ConditionAvailable, metav1.ConditionTrue, "ManagedClusterAvailable", "heartbeats arrive")
		default:
			set(clusterv1.ConditionAvailable, metav1.ConditionUnknown, "ManagedClusterLeaseUpdateStopped",
				fmt.Sprintf("no heartbeat since %s (one every %v expected)", last.At.UTC().Format(time.RFC3339), interval))
		}
	default:
		set(clusterv1.ConditionAvailable, metav1.ConditionUnknown, "ManagedClusterWaitForJoin", "the agent has not joined")
	}
	switch {
	case !accepted:
		meta.RemoveStatusCondition(&conds, clusterv1.ConditionJoined)
	case alive || meta.IsStatusConditionTrue(conds, clusterv1.ConditionJoined):
		// Once joined, a cluster stays joined; AVAILABLE says whether it is there now.
		set(clusterv1.ConditionJoined, metav1.ConditionTrue, "ManagedClusterJoined", "accepted, and its agent connected")
	}
	return conds
}

func (d *Dispatcher) updateStatus(ctx context.Context, name string, now time.Time) error {
	var last *seen
	if entry, err := d.kv.Get(ctx, bus.SeenKey(name)); err == nil {
		last = &seen{}
		if err := json.Unmarshal(entry.Value(), last); err != nil {
			last = nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	// Most checks change nothing: decide on the cached copy, read fresh only to write.
	if obj, err := d.clusters.Get(name); err == nil {
		if mc, err := toCluster(obj); err == nil {
			conds := clusterConditions(mc, last, d.opts.MissedHeartbeats, now, d.linkDown(mc))
			if equality.Semantic.DeepEqual(conds, mc.Status.Conditions) && (last == nil || last.KubernetesVersion == "" || last.KubernetesVersion == mc.Status.Version.Kubernetes) {
				return nil
			}
		}
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := d.dyn.Resource(clusterv1.ManagedClusterResource).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		mc, err := toCluster(u)
		if err != nil {
			return err
		}
		st := mc.Status
		st.Conditions = clusterConditions(mc, last, d.opts.MissedHeartbeats, now, d.linkDown(mc))
		if last != nil && last.KubernetesVersion != "" {
			st.Version.Kubernetes = last.KubernetesVersion
		}
		if equality.Semantic.DeepEqual(st, mc.Status) {
			return nil
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			return err
		}
		u.Object["status"] = obj
		_, err = d.dyn.Resource(clusterv1.ManagedClusterResource).UpdateStatus(ctx, u, metav1.UpdateOptions{})
		return err
	})
}
