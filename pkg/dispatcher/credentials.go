package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"

	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// The key a cluster's credential is for is the one its ManagedCluster
// names (AgentKeyAnnotation): what an admin accepts is that object, and
// the API server's create decides between two joins racing to make it
// (the first join's key; or the key an admin wrote on a ManagedCluster
// made before its agent joined). The clusters bucket holds a copy
// (bus.AgentKeyKey) for the planner, which checks status bundles with it.

// verifyJoin checks a join's proof, and that its key is the cluster's
// when it has one.
func (d *Dispatcher) verifyJoin(ctx context.Context, id string, data *events.ClusterJoinData) error {
	if data.NKey == "" {
		return fmt.Errorf("join of cluster %s carries no key: this hub signs each agent its own credential (start the agent with --nats-identity and --nats-bootstrap-creds)", data.Cluster)
	}
	if err := creds.VerifyJoin(data.Cluster, data.NKey, id, data.Proof); err != nil {
		return err
	}
	registered := ""
	if obj, err := d.clusters.Get(data.Cluster); err == nil {
		registered = annotatedKey(obj)
	}
	if registered == "" {
		var err error
		if registered, err = d.agentKey(ctx, data.Cluster); err != nil {
			return err
		}
	}
	if registered != "" && registered != data.NKey {
		return keyMismatch(data.Cluster, registered, data.NKey)
	}
	return d.keyFor(ctx, data.Cluster, data.NKey)
}

// keyFor refuses a key the hub revoked for another cluster: revocations
// are by key, so a cluster given it would bring the other's old
// credentials back.
func (d *Dispatcher) keyFor(ctx context.Context, cluster, pub string) error {
	rec, err := d.revocation(ctx, pub)
	if err != nil {
		return err
	}
	if rec != nil && rec.Cluster != cluster {
		return fmt.Errorf("key %s was revoked for cluster %s: a key serves one cluster only (the agent of %s makes a new key when its identity file is removed)", pub, rec.Cluster, cluster)
	}
	return nil
}

// revoked is the record of a key the hub revoked (bus.RevokedKey): for
// which cluster, and up to when its JWTs are refused.
type revoked struct {
	Cluster string `json:"cluster"`
	At      int64  `json:"at"`
}

// revocation is pub's revocation record (nil: none).
func (d *Dispatcher) revocation(ctx context.Context, pub string) (*revoked, error) {
	entry, err := d.kv.Get(ctx, bus.RevokedKey(pub))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the revocation of key %s: %w", pub, err)
	}
	var r revoked
	if err := json.Unmarshal(entry.Value(), &r); err != nil || r.Cluster == "" {
		// Written by the dispatcher alone: unreadable is a fault, and
		// refusing the key is the safe side.
		return &revoked{Cluster: "(unreadable record)", At: time.Now().Unix()}, nil
	}
	return &r, nil
}

// revokeKey records and revokes pub's JWTs issued up to now.
func (d *Dispatcher) revokeKey(ctx context.Context, cluster, pub string) error {
	at := time.Now()
	rec, _ := json.Marshal(revoked{Cluster: cluster, At: at.Unix()})
	// Recorded first: a revocation the servers lose (a push that failed,
	// an account JWT installed anew) is put back by reconcileCredentials.
	if _, err := d.kv.Put(ctx, bus.RevokedKey(pub), rec); err != nil {
		return fmt.Errorf("record the revocation of cluster %s: %w", cluster, err)
	}
	if err := d.opts.Issuer.Revoke(ctx, pub, at); err != nil {
		return fmt.Errorf("revoke the credential of cluster %s: %w", cluster, err)
	}
	d.log.Info("cluster credential revoked", "cluster", cluster, "nkey", pub)
	return nil
}

// issuedKey is the key of the credential the hub put out for a cluster
// ("" none).
func (d *Dispatcher) issuedKey(ctx context.Context, cluster string) (string, error) {
	entry, err := d.kv.Get(ctx, bus.CredentialKey(cluster))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the credential of cluster %s: %w", cluster, err)
	}
	uc, err := jwt.DecodeUserClaims(string(entry.Value()))
	if err != nil {
		return "", nil
	}
	return uc.Subject, nil
}

func keyMismatch(cluster, registered, got string) error {
	return fmt.Errorf("cluster %s is registered with key %s: a join signed with %s is refused (delete the ManagedCluster to register the cluster anew)", cluster, registered, got)
}

// annotatedKey is the agent key a ManagedCluster names ("" none).
func annotatedKey(obj runtime.Object) string {
	m, err := meta.Accessor(obj)
	if err != nil {
		return ""
	}
	return m.GetAnnotations()[AgentKeyAnnotation]
}

// checkJoin registers a verified join's key as the cluster's, once its
// ManagedCluster exists: the key it names, or, on a ManagedCluster an
// admin made without one and has not accepted yet, the join's (written on
// it, for the admin to compare with the key the agent logs before
// accepting). An accepted ManagedCluster that names no key gets none from
// a join: anyone holding the bootstrap credential could send it first.
func (d *Dispatcher) checkJoin(ctx context.Context, id string, data *events.ClusterJoinData) error {
	res := d.dyn.Resource(clusterv1.ManagedClusterResource)
	obj, err := res.Get(ctx, data.Cluster, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read ManagedCluster %s: %w", data.Cluster, err)
	}
	key := annotatedKey(obj)
	switch {
	case key == "" && acceptedBy(obj):
		return fmt.Errorf("ManagedCluster %s is accepted but names no agent key: a join cannot register one; check the key its agent logs and set it with kubectl annotate managedcluster %s %s=%s", data.Cluster, data.Cluster, AgentKeyAnnotation, data.NKey)
	case key == "":
		obj.SetAnnotations(mergeAnnotation(obj.GetAnnotations(), AgentKeyAnnotation, data.NKey))
		if _, err := res.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			// A conflict: changed meanwhile (accepted, or another join's
			// key written); judged again on redelivery.
			return bus.Retry(100*time.Millisecond, fmt.Errorf("name the key of cluster %s on its ManagedCluster: %w", data.Cluster, err))
		}
		key = data.NKey
	case key != data.NKey:
		return keyMismatch(data.Cluster, key, data.NKey)
	}
	copied, err := d.agentKey(ctx, data.Cluster)
	if err != nil {
		return err
	}
	if copied == key {
		return nil
	}
	if _, err := d.kv.Put(ctx, bus.AgentKeyKey(data.Cluster), []byte(key)); err != nil {
		return fmt.Errorf("register the key of cluster %s: %w", data.Cluster, err)
	}
	d.log.Info("cluster key registered", "cluster", data.Cluster, "nkey", key)
	// A cluster accepted before its agent joined gets its credential now.
	d.mu.Lock()
	delete(d.accepted, data.Cluster)
	d.mu.Unlock()
	d.queueOf(data.Cluster).Add(data.Cluster)
	return nil
}

func mergeAnnotation(in map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(in)+1)
	for key, val := range in {
		out[key] = val
	}
	out[k] = v
	return out
}

// agentKey is the key registered for a cluster ("" none).
func (d *Dispatcher) agentKey(ctx context.Context, cluster string) (string, error) {
	entry, err := d.kv.Get(ctx, bus.AgentKeyKey(cluster))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the key of cluster %s: %w", cluster, err)
	}
	return string(entry.Value()), nil
}

// acceptedKey is agentKey while the hub accepts the cluster: a cluster
// no longer accepted reports nothing, by bundle as by NATS.
func (d *Dispatcher) acceptedKey(ctx context.Context, cluster string) (string, error) {
	entry, err := d.kv.Get(ctx, bus.AcceptedKey(cluster))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("read the acceptance of cluster %s: %w", cluster, err)
	}
	if err != nil || string(entry.Value()) != "true" {
		return "", bus.Terminate(fmt.Errorf("status bundle of cluster %s refused: the hub does not accept the cluster", cluster))
	}
	return d.agentKey(ctx, cluster)
}

// issue signs an accepted cluster's agent its credential, for the key its
// ManagedCluster names once a join signed with it registered it, and puts
// it where the joining agent reads it.
func (d *Dispatcher) issue(ctx context.Context, cluster string, obj runtime.Object) error {
	if d.opts.Issuer == nil {
		return nil
	}
	pub := annotatedKey(obj)
	registered, err := d.agentKey(ctx, cluster)
	if err != nil {
		return err
	}
	switch {
	case pub == "":
		d.log.Warn("cluster accepted but its ManagedCluster names no agent key: no credential until it does", "cluster", cluster, "annotation", AgentKeyAnnotation)
		return nil
	case registered != pub:
		d.log.Info("cluster accepted before its agent joined with the key it names: its credential waits for the join", "cluster", cluster, "nkey", pub)
		return nil // its join queues it again
	}
	if err := d.keyFor(ctx, cluster, pub); err != nil {
		d.log.Warn("no credential for cluster", "cluster", cluster, "err", err)
		return nil
	}
	// A key rotated on the ManagedCluster: the old key's credential dies.
	if prev, err := d.issuedKey(ctx, cluster); err != nil {
		return err
	} else if prev != "" && prev != pub {
		if err := d.revokeKey(ctx, cluster, prev); err != nil {
			return err
		}
	}
	// Accepted again with the key it had: a JWT newer than the revocation,
	// which stays (the old JWTs stay refused).
	var after time.Time
	rec, err := d.revocation(ctx, pub)
	if err != nil {
		return err
	}
	if rec != nil {
		after = time.Unix(rec.At, 0)
	}
	token, err := d.opts.Issuer.IssueAfter(ctx, cluster, pub, after)
	if err != nil {
		return err
	}
	if _, err := d.kv.Put(ctx, bus.CredentialKey(cluster), []byte(token)); err != nil {
		return fmt.Errorf("credential of cluster %s: %w", cluster, err)
	}
	d.log.Info("cluster credential issued", "cluster", cluster, "nkey", pub)
	return nil
}

// revoke revokes the credential of a cluster no longer accepted, then
// withdraws it; a deleted cluster's key is forgotten too, so the cluster
// can be registered anew. In this order, a retry after a crash revokes
// again (which changes nothing) before anything is forgotten. What is
// revoked is the key of the credential the hub put out: a key that was
// never given one (a cluster that only asked to join) needs none.
func (d *Dispatcher) revoke(ctx context.Context, cluster string, gone bool) error {
	if d.opts.Issuer == nil {
		return nil
	}
	pub, err := d.issuedKey(ctx, cluster)
	if err != nil {
		return err
	}
	if pub != "" {
		if err := d.revokeKey(ctx, cluster, pub); err != nil {
			return err
		}
		if err := d.kv.Purge(ctx, bus.CredentialKey(cluster)); err != nil {
			return fmt.Errorf("withdraw the credential of cluster %s: %w", cluster, err)
		}
	}
	registered, err := d.agentKey(ctx, cluster)
	if err != nil {
		return err
	}
	if gone && registered != "" {
		// Gone from the cache may be a cache behind a join that just
		// created it: forget the key only of a cluster the hub has not.
		_, err := d.dyn.Resource(clusterv1.ManagedClusterResource).Get(ctx, cluster, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read ManagedCluster %s: %w", cluster, err)
		}
		if err := d.kv.Purge(ctx, bus.AgentKeyKey(cluster)); err != nil {
			return fmt.Errorf("forget the key of cluster %s: %w", cluster, err)
		}
	}
	return nil
}

// reconcileCredentials makes the servers' revocations and the hub agree
// again, whatever happened while no dispatcher ran: every key the hub
// revoked is revoked in the account (an account JWT installed anew, as a
// re-rendered preload does, lifts them all), and a cluster deleted while
// no dispatcher watched, whose credential or key the bucket still holds,
// is relayed as gone (revoked, forgotten).
func (d *Dispatcher) reconcileCredentials(ctx context.Context) error {
	if d.opts.Issuer == nil {
		return nil
	}
	keys, err := d.keys(ctx, bus.RevokedPrefix+">")
	if err != nil {
		return err
	}
	all := map[string]time.Time{}
	for _, k := range keys {
		pub := strings.TrimPrefix(k, bus.RevokedPrefix)
		rec, err := d.revocation(ctx, pub)
		if err != nil {
			return err
		}
		if rec != nil {
			all[pub] = time.Unix(rec.At, 0)
		}
	}
	if len(all) > 0 {
		if err := d.opts.Issuer.RevokeAll(ctx, all); err != nil {
			return fmt.Errorf("revocations: %w", err)
		}
	}
	held, err := d.keys(ctx, "*.credential", "*.agentkey")
	if err != nil {
		return err
	}
	for _, k := range held {
		cluster, _, _ := strings.Cut(k, ".")
		if _, err := d.clusters.Get(cluster); apierrors.IsNotFound(err) {
			d.mu.Lock()
			delete(d.accepted, cluster)
			d.mu.Unlock()
			d.queueOf(cluster).Add(cluster)
		}
	}
	return nil
}

// keys lists the clusters bucket's keys matching filters.
func (d *Dispatcher) keys(ctx context.Context, filters ...string) ([]string, error) {
	l, err := d.kv.ListKeysFiltered(ctx, filters...)
	if err != nil {
		return nil, fmt.Errorf("list %v: %w", filters, err)
	}
	defer func() { _ = l.Stop() }()
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out, nil
}

// handleStatusBundle takes the heartbeat of a status bundle carried from a
// site with no link: the hub learns when the cluster was last seen (never
// later than it was: a bundle's heartbeat is as old as the bundle). It
// counts only if the bundle is signed with the key the cluster joined with.
func (d *Dispatcher) handleStatusBundle(ctx context.Context, e *events.Event) error {
	s, err := bundle.Admit(ctx, e, d.acceptedKey)
	if err != nil {
		if bus.IsTerminal(err) {
			d.log.Warn("status bundle refused", "err", err)
		}
		return err
	}
	for _, m := range s.Messages {
		hb, err := events.Decode(m.Msg())
		if err != nil || hb.Type != events.TypeClusterHeartbeat {
			continue
		}
		beat, ok := hb.Data.(*events.ClusterJoinData)
		if !ok || beat.Cluster != s.Cluster {
			continue
		}
		if entry, err := d.kv.Get(ctx, bus.SeenKey(s.Cluster)); err == nil {
			var last seen
			if json.Unmarshal(entry.Value(), &last) == nil && !last.At.Before(hb.Time) {
				continue // the hub heard from it since
			}
		}
		v, _ := json.Marshal(seen{At: hb.Time, HeartbeatMillis: beat.HeartbeatMillis, KubernetesVersion: beat.KubernetesVersion, Problem: beat.Problem})
		if _, err := d.kv.Put(ctx, bus.SeenKey(s.Cluster), v); err != nil {
			return err
		}
	}
	d.log.Info("status bundle imported", "cluster", s.Cluster, "writtenAt", s.WrittenAt)
	return d.updateStatus(ctx, s.Cluster, time.Now())
}
