package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"

	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// verifyJoin checks a join's proof, and that its key is the cluster's
// when it has one registered.
func (d *Dispatcher) verifyJoin(ctx context.Context, id string, data *events.ClusterJoinData) error {
	if data.NKey == "" {
		return fmt.Errorf("join of cluster %s carries no key: this hub signs each agent its own credential (start the agent with --nats-identity and --nats-bootstrap-creds)", data.Cluster)
	}
	if err := creds.VerifyJoin(data.Cluster, data.NKey, id, data.Proof); err != nil {
		return err
	}
	registered, err := d.agentKey(ctx, data.Cluster)
	if err != nil {
		return err
	}
	if registered != "" && registered != data.NKey {
		return keyMismatch(data.Cluster, registered, data.NKey)
	}
	return nil
}

func keyMismatch(cluster, registered, got string) error {
	return fmt.Errorf("cluster %s is registered with key %s: a join signed with %s is refused (delete the ManagedCluster to register the cluster anew)", cluster, registered, got)
}

// checkJoin registers a verified join's key as the cluster's when the
// cluster has none yet (the first join wins; an admin compares it with the
// key the agent logs before accepting). A join signed with another key is
// refused.
func (d *Dispatcher) checkJoin(ctx context.Context, id string, data *events.ClusterJoinData) error {
	registered, err := d.agentKey(ctx, data.Cluster)
	if err != nil {
		return err
	}
	switch {
	case registered == data.NKey:
		return nil
	case registered != "":
		return keyMismatch(data.Cluster, registered, data.NKey)
	}
	if _, err := d.kv.Create(ctx, bus.AgentKeyKey(data.Cluster), []byte(data.NKey)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another join registered first: this one is judged against
			// it when redelivered.
			return bus.Retry(100*time.Millisecond, err)
		}
		return fmt.Errorf("register the key of cluster %s: %w", data.Cluster, err)
	}
	d.log.Info("cluster key registered", "cluster", data.Cluster, "nkey", data.NKey)
	// A cluster accepted before its agent joined gets its credential now.
	d.mu.Lock()
	delete(d.accepted, data.Cluster)
	d.mu.Unlock()
	d.queue.Add(data.Cluster)
	return nil
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

// issue signs an accepted cluster's agent its credential, for the key it
// registered, and puts it where the joining agent reads it.
func (d *Dispatcher) issue(ctx context.Context, cluster string) error {
	if d.opts.Issuer == nil {
		return nil
	}
	pub, err := d.agentKey(ctx, cluster)
	if err != nil {
		return err
	}
	if pub == "" {
		d.log.Info("cluster accepted before its agent joined: its credential waits for the join", "cluster", cluster)
		return nil // its join queues it again
	}
	// A cluster accepted again with the key it had is revoked no longer.
	if err := d.opts.Issuer.Unrevoke(ctx, pub); err != nil {
		return fmt.Errorf("credential of cluster %s: %w", cluster, err)
	}
	token, err := d.opts.Issuer.Issue(cluster, pub)
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
// again (which changes nothing) before anything is forgotten.
func (d *Dispatcher) revoke(ctx context.Context, cluster string, gone bool) error {
	if d.opts.Issuer == nil {
		return nil
	}
	pub, err := d.agentKey(ctx, cluster)
	if err != nil || pub == "" {
		return err
	}
	if _, err := d.kv.Get(ctx, bus.CredentialKey(cluster)); err == nil {
		if err := d.opts.Issuer.Revoke(ctx, pub); err != nil {
			return fmt.Errorf("revoke the credential of cluster %s: %w", cluster, err)
		}
		if err := d.kv.Purge(ctx, bus.CredentialKey(cluster)); err != nil {
			return fmt.Errorf("withdraw the credential of cluster %s: %w", cluster, err)
		}
		d.log.Info("cluster credential revoked", "cluster", cluster, "nkey", pub)
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read the credential of cluster %s: %w", cluster, err)
	}
	if gone {
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

// handleStatusBundle takes the heartbeat of a status bundle carried from a
// site with no link: the hub learns when the cluster was last seen (never
// later than it was: a bundle's heartbeat is as old as the bundle). It
// counts only if the bundle is signed with the key the cluster joined with.
func (d *Dispatcher) handleStatusBundle(ctx context.Context, e *events.Event) error {
	s, err := bundle.Admit(ctx, e, d.agentKey)
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
