package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/pkg/agent"
	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/creds/credstest"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// credHub is an operator-mode NATS server trusting a fresh authority,
// with a dispatcher that logs in with its own rights and issues agents'
// credentials.
type credHub struct {
	*fixture
	a   *creds.Authority
	s   *natstest.Server
	sys *nats.Conn // the issuer's system-account login
	dir string
	// restart starts another dispatcher like the first (stop that first).
	restart func() *fixture
}

func startCredHub(t *testing.T) *credHub {
	t.Helper()
	ch := credstest.Start(t)
	a, s, dir := ch.Authority, ch.Server, ch.Dir
	user := func(name string, p *bus.Permissions) []byte {
		data, err := a.User(name, p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	_, admin := s.ConnectCreds(t, user("admin", nil))
	dp := bus.DispatcherPermissions()
	_, djs := s.ConnectCreds(t, user("dispatcher", &dp), nats.CustomInboxPrefix(bus.DispatcherInboxPrefix))
	sysCreds, err := a.SystemUser("dispatcher-issuer", bus.IssuerPermissions(a.ClustersKey()))
	if err != nil {
		t.Fatal(err)
	}
	snc, _ := s.ConnectCreds(t, sysCreds, nats.CustomInboxPrefix(bus.DispatcherInboxPrefix))
	iss, err := creds.NewIssuer(a.AgentSigning, a.OperatorSigning, a.ClustersKey(), snc)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := a.Bootstrap("bootstrap", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.WriteFile(filepath.Join(dir, "bootstrap.creds"), boot); err != nil {
		t.Fatal(err)
	}
	opts := Options{Issuer: iss, CheckInterval: 200 * time.Millisecond, ReconcileInterval: 200 * time.Millisecond}
	f := run(t, opts, admin, djs)
	return &credHub{fixture: f, a: a, s: s, sys: snc, dir: dir, restart: func() *fixture { return run(t, opts, admin, djs) }}
}

// enroll runs an agent's enrolment for cluster with its identity file in
// the background: the channel yields its key once it holds a credential.
func (h *credHub) enroll(ctx context.Context, cluster, identity string) <-chan nkeys.KeyPair {
	done := make(chan nkeys.KeyPair, 1)
	go func() {
		kp, err := agent.Enroll(ctx, slog.New(slog.NewTextHandler(h.logs, nil)),
			agent.Options{Cluster: cluster, Identity: identity, Bootstrap: filepath.Join(h.dir, "bootstrap.creds"), Heartbeat: 200 * time.Millisecond},
			bus.ConnectOptions{URL: h.s.URL(), API: bus.ClusterAPI})
		if err == nil {
			done <- kp
		}
		close(done)
	}()
	return done
}

func (h *credHub) accept(name string, yes bool) {
	h.t.Helper()
	patch := []byte(`{"spec":{"hubAcceptsClient":` + map[bool]string{true: "true", false: "false"}[yes] + `}}`)
	if _, err := h.hub.Resource(clusterv1.ManagedClusterResource).Patch(h.ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

// A cluster's agent joins with the bootstrap credential and its own key;
// accepting the cluster signs it a credential the server takes; a join
// for the same cluster with another key is refused; deleting the cluster
// revokes the credential on the running server (its connection closes,
// its next login is refused), and the agent can ask to join again.
func TestJoinAcceptRevoke(t *testing.T) {
	h := startCredHub(t)
	const name = "cred-alpha"
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	identity := filepath.Join(h.dir, "alpha.creds")
	got := h.enroll(ctx, name, identity)
	eventually.True(t, 30*time.Second, "the join registers "+name, func() (bool, error) {
		_, err := h.cluster(name)
		return err == nil, err
	})
	mine, err := creds.Seed(identity)
	if err != nil {
		t.Fatal(err)
	}
	minePub, _ := mine.PublicKey()
	if mc, err := h.cluster(name); err != nil {
		t.Fatal(err)
	} else if got := mc.Annotations[AgentKeyAnnotation]; got != minePub {
		t.Fatalf("the ManagedCluster shows key %q, want the agent's %s", got, minePub)
	}

	// An impostor with the shared bootstrap credential asks to join as the
	// same cluster with its own key: refused, and never given a credential.
	impostorCtx, stopImpostor := context.WithCancel(ctx)
	impostor := h.enroll(impostorCtx, name, filepath.Join(h.dir, "impostor.creds"))
	eventually.True(t, 30*time.Second, "the impostor's join refused", func() (bool, error) {
		return strings.Contains(h.logs.String(), "is registered with key "+minePub), nil
	})
	select {
	case <-got:
		t.Fatal("a credential before the cluster was accepted")
	default:
	}

	h.accept(name, true)
	var kp nkeys.KeyPair
	select {
	case kp = <-got:
	case <-time.After(30 * time.Second):
		t.Fatalf("no credential 30s after accepting:\n%s", h.logs)
	}
	if pub, _ := kp.PublicKey(); pub != minePub {
		t.Fatalf("enrolled as %s, its key is %s", pub, minePub)
	}
	select {
	case kp, ok := <-impostor:
		if ok {
			pub, _ := kp.PublicKey()
			t.Fatalf("the impostor got a credential for %s", pub)
		}
	case <-time.After(time.Second):
	}
	stopImpostor()

	file, err := os.ReadFile(identity)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := h.s.DialCreds(file, nats.CustomInboxPrefix(bus.InboxPrefix(name)), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("the agent's credential: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithAPIPrefix(nc, bus.ClusterAPI)
	if err != nil {
		t.Fatal(err)
	}
	// It pulls its own work consumer (made on accept) with its credential.
	if _, err := js.Consumer(ctx, bus.StreamWork, bus.AgentConsumer(name)); err != nil {
		t.Fatalf("the accepted agent cannot read its work consumer: %v", err)
	}

	if err := h.hub.Resource(clusterv1.ManagedClusterResource).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "the deleted cluster's agent disconnected", func() (bool, error) {
		return !nc.IsConnected(), nil
	})
	if again, err := h.s.DialCreds(file); err == nil {
		again.Close()
		t.Fatal("a deleted cluster's agent logged in again")
	} else if !errors.Is(err, nats.ErrAuthorization) && !errors.Is(err, nats.ErrAuthRevoked) {
		t.Fatalf("login of a deleted cluster's agent: %v, want refused", err)
	}

	// Restarted, the agent finds its credential refused and asks to join
	// again: a new ManagedCluster waits to be accepted.
	rejoined := h.enroll(ctx, name, identity)
	eventually.True(t, 30*time.Second, "the cluster registered again", func() (bool, error) {
		mc, err := h.cluster(name)
		if apierrors.IsNotFound(err) {
			return false, err
		}
		return err == nil && !mc.Spec.HubAcceptsClient && mc.DeletionTimestamp == nil, err
	})
	h.accept(name, true)
	select {
	case kp, ok := <-rejoined:
		if !ok {
			t.Fatal("enrolling again failed")
		}
		if pub, _ := kp.PublicKey(); pub != minePub {
			t.Fatalf("rejoined as %s, want its own key %s", pub, minePub)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no credential after accepting again:\n%s", h.logs)
	}
	file, _ = os.ReadFile(identity)
	if again, err := h.s.DialCreds(file); err != nil {
		t.Fatalf("accepted again, the agent cannot log in: %v", err)
	} else {
		again.Close()
	}
}

// A ManagedCluster an admin made and accepted before its agent joined
// names no key: the first join, which anyone holding the shared bootstrap
// credential can send, gets no credential and names none. Once the admin
// names the agent's key on it, that agent's join gets its credential, and
// a join signed with any other key is refused.
func TestPreAcceptedClusterIssuesOnlyTheNamedKey(t *testing.T) {
	h := startCredHub(t)
	const name = "cred-pre"
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": clusterv1.GroupVersion.String(), "kind": "ManagedCluster",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"hubAcceptsClient": true},
	}}
	if _, err := h.hub.Resource(clusterv1.ManagedClusterResource).Create(ctx, mc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	impostorCtx, stopImpostor := context.WithCancel(ctx)
	defer stopImpostor()
	impostor := h.enroll(impostorCtx, name, filepath.Join(h.dir, "impostor.creds"))
	eventually.True(t, 30*time.Second, "the first join on an accepted ManagedCluster naming no key refused", func() (bool, error) {
		return strings.Contains(h.logs.String(), "is accepted but names no agent key"), nil
	})
	if mc, err := h.cluster(name); err != nil || mc.Annotations[AgentKeyAnnotation] != "" {
		t.Fatalf("the ManagedCluster after a join: %v, %v: a join named its key", mc.Annotations, err)
	}

	// The admin names the real agent's key (which it logs on first start).
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	identity := filepath.Join(h.dir, "pre.creds")
	if err := creds.WriteFile(identity, append(seed, '\n')); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"annotations":{"` + AgentKeyAnnotation + `":"` + pub + `"}}}`)
	if _, err := h.hub.Resource(clusterv1.ManagedClusterResource).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case got, ok := <-h.enroll(ctx, name, identity):
		if !ok {
			t.Fatal("the named agent's enrolment failed")
		}
		if gotPub, _ := got.PublicKey(); gotPub != pub {
			t.Fatalf("enrolled as %s, want %s", gotPub, pub)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no credential for the named key 30s after it was named:\n%s", h.logs)
	}
	select {
	case kp, ok := <-impostor:
		if ok {
			p, _ := kp.PublicKey()
			t.Fatalf("the impostor got a credential for %s", p)
		}
	case <-time.After(time.Second):
	}
	if !strings.Contains(h.logs.String(), "is registered with key "+pub) {
		t.Errorf("the impostor's joins were not refused against the named key:\n%s", h.logs)
	}
}

// The servers lose a revocation when the account's JWT is installed anew
// (a re-rendered preload, an operator's push): the deleted cluster's
// agent could log in again. The dispatcher keeps what it revoked and puts
// it back.
func TestLostRevocationIsPutBack(t *testing.T) {
	h := startCredHub(t)
	const name = "cred-lost"
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	file := h.accepted(ctx, name, filepath.Join(h.dir, "lost.creds"))
	if err := h.hub.Resource(clusterv1.ManagedClusterResource).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	refused := func() (bool, error) { return h.refused(file) }
	eventually.True(t, 30*time.Second, "the deleted cluster's credential refused", refused)

	// The account installed anew, as first rendered: no revocation.
	fresh, err := h.a.ClustersJWT()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := h.sys.RequestWithContext(ctx, creds.ClaimsUpdateSubject(h.a.ClustersKey()), []byte(fresh))
	if err != nil || !strings.Contains(string(msg.Data), "jwt updated") {
		t.Fatalf("install the account anew: %v %s", err, msg.Data)
	}
	eventually.True(t, 30*time.Second, "the revocation put back", refused)
	if !strings.Contains(h.logs.String(), "cluster credential revoked") {
		t.Errorf("no revocation logged:\n%s", h.logs)
	}
}

// A cluster deleted while no dispatcher runs is revoked when one starts:
// its informer never sees the deletion, the bucket still holds its
// credential.
func TestClusterDeletedWhileDownIsRevoked(t *testing.T) {
	h := startCredHub(t)
	const name = "cred-down"
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	file := h.accepted(ctx, name, filepath.Join(h.dir, "down.creds"))
	cancel() // the agent's enrolment is done; nothing joins again
	h.stop()
	if err := h.hub.Resource(clusterv1.ManagedClusterResource).Delete(h.ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if nc, err := h.s.DialCreds(file); err != nil {
		t.Fatalf("before any dispatcher ran again the credential was already refused: %v", err)
	} else {
		nc.Close()
	}
	again := h.restart()
	eventually.True(t, 30*time.Second, "the credential of the cluster deleted while down refused", func() (bool, error) {
		nc, err := h.s.DialCreds(file)
		if err == nil {
			nc.Close()
		}
		return err != nil, nil
	})
	if !strings.Contains(again.logs.String(), "cluster credential revoked") {
		t.Errorf("the restarted dispatcher logged no revocation:\n%s", again.logs)
	}
}

// accepted enrols cluster's agent with its identity file, accepts the
// cluster once its join registered it, and returns the credentials file
// the agent then holds.
func (h *credHub) accepted(ctx context.Context, cluster, identity string) []byte {
	h.t.Helper()
	got := h.enroll(ctx, cluster, identity)
	eventually.True(h.t, 30*time.Second, "the join registers "+cluster, func() (bool, error) {
		_, err := h.cluster(cluster)
		return err == nil, nil
	})
	h.accept(cluster, true)
	return h.credentialOf(got, identity)
}

// credentialOf waits for enrolment's key and returns its credentials file.
func (h *credHub) credentialOf(got <-chan nkeys.KeyPair, identity string) []byte {
	h.t.Helper()
	select {
	case _, ok := <-got:
		if !ok {
			h.t.Fatalf("enrolment of %s failed:\n%s", identity, h.logs)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatalf("no credential for %s 30s after accepting:\n%s", identity, h.logs)
	}
	file, err := os.ReadFile(identity)
	if err != nil {
		h.t.Fatal(err)
	}
	return file
}

func (h *credHub) refused(file []byte) (bool, error) {
	nc, err := h.s.DialCreds(file)
	if err == nil {
		nc.Close()
	}
	return err != nil, nil
}

// Revocations are by key: a deleted cluster's agent that joins as another
// cluster with the key it had would, once that one is accepted, bring its
// old credential back (and with it the deleted cluster's work, for
// whoever runs that cluster next). A key revoked for one cluster serves no
// other: the join is refused, and the old credential stays dead.
func TestRevokedKeyServesNoOtherCluster(t *testing.T) {
	h := startCredHub(t)
	const alpha, other = "cred-first", "cred-second"
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	file := h.accepted(ctx, alpha, filepath.Join(h.dir, "first.creds"))
	if err := h.hub.Resource(clusterv1.ManagedClusterResource).Delete(ctx, alpha, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, alpha+"'s credential refused", func() (bool, error) { return h.refused(file) })

	again := filepath.Join(h.dir, "second.creds")
	if err := os.WriteFile(again, file, 0o600); err != nil {
		t.Fatal(err)
	}
	h.enroll(ctx, other, again)
	eventually.True(t, 30*time.Second, "the join with "+alpha+"'s revoked key refused", func() (bool, error) {
		return strings.Contains(h.logs.String(), "was revoked for cluster "+alpha), nil
	})
	if _, err := h.cluster(other); !apierrors.IsNotFound(err) {
		t.Errorf("a join with a revoked key made ManagedCluster %s: %v", other, err)
	}
	if ok, _ := h.refused(file); !ok {
		t.Error("the deleted cluster's credential logs in again")
	}
}

// Rotating a cluster's key (the admin names a new one on its
// ManagedCluster) revokes the old key's credential once the new key's
// is issued.
func TestRotatedKeyIsRevoked(t *testing.T) {
	h := startCredHub(t)
	const name = "cred-rotate"
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	enrolCtx, stop := context.WithCancel(ctx)
	old := h.accepted(enrolCtx, name, filepath.Join(h.dir, "rotate-1.creds"))
	stop()

	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	second := filepath.Join(h.dir, "rotate-2.creds")
	if err := creds.WriteFile(second, append(seed, '\n')); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"annotations":{"` + AgentKeyAnnotation + `":"` + pub + `"}}}`)
	if _, err := h.hub.Resource(clusterv1.ManagedClusterResource).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := h.credentialOf(h.enroll(ctx, name, second), second)
	if ok, _ := h.refused(fresh); ok {
		t.Fatal("the new key's credential is refused")
	}
	eventually.True(t, 30*time.Second, "the old key's credential refused", func() (bool, error) { return h.refused(old) })
}

// Clusters that only ask to join, never accepted, were never given a
// credential: nothing is revoked for them (revocations live in the
// account's JWT, which a flood of joins must not grow).
func TestPendingJoinsRevokeNothing(t *testing.T) {
	h := startCredHub(t)
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	for _, c := range []string{"cred-pend-a", "cred-pend-b", "cred-pend-c"} {
		h.enroll(ctx, c, filepath.Join(h.dir, c+".creds"))
		eventually.True(t, 30*time.Second, c+" registered", func() (bool, error) { _, err := h.cluster(c); return err == nil, nil })
		t.Cleanup(func() { _ = h.hub.Resource(clusterv1.ManagedClusterResource).Delete(h.ctx, c, metav1.DeleteOptions{}) })
	}
	time.Sleep(2 * time.Second) // joins go on meanwhile
	msg, err := h.sys.RequestWithContext(ctx, creds.ClaimsLookupSubject(h.a.ClustersKey()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(string(msg.Data))
	if err != nil {
		t.Fatal(err)
	}
	if len(ac.Revocations) != 0 {
		t.Errorf("%d revocations for clusters never accepted", len(ac.Revocations))
	}
}
