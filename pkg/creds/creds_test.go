package creds_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/creds/credstest"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// hub is an operator-mode server trusting a fresh authority, and the
// dispatcher's issuer over a system-account login.
type hub struct {
	a   *creds.Authority
	s   *natstest.Server
	iss *creds.Issuer
}

func newHub(t *testing.T) *hub {
	t.Helper()
	ch := credstest.Start(t)
	a, s := ch.Authority, ch.Server
	sysCreds, err := a.SystemUser("dispatcher-issuer", bus.IssuerPermissions(a.ClustersKey()))
	if err != nil {
		t.Fatal(err)
	}
	snc, _ := s.ConnectCreds(t, sysCreds, nats.CustomInboxPrefix(bus.DispatcherInboxPrefix))
	iss, err := creds.NewIssuer(a.AgentSigning, a.OperatorSigning, a.ClustersKey(), snc)
	if err != nil {
		t.Fatal(err)
	}
	return &hub{a: a, s: s, iss: iss}
}

// conn is one login; errs keeps what the server refused it.
type conn struct {
	nc   *nats.Conn
	mu   sync.Mutex
	errs []error
}

func (h *hub) login(t *testing.T, credsFile []byte, inbox string) (*conn, error) {
	t.Helper()
	c := &conn{}
	nc, err := h.s.DialCreds(credsFile, nats.CustomInboxPrefix(inbox), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.errs = append(c.errs, err)
		}))
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	return c, nil
}

func (c *conn) refusedSoon(t *testing.T, op, subject string) {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	eventually.True(t, 10*time.Second, want, func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, err := range c.errs {
			if strings.Contains(err.Error(), want) {
				return true, nil
			}
		}
		return false, nil
	})
}

// agentCreds is an agent's credentials file: its own key, the JWT issued.
func agentCreds(t *testing.T, h *hub, cluster string) ([]byte, string) {
	t.Helper()
	return (&credstest.Hub{Authority: h.a, Server: h.s}).AgentKey(t, cluster)
}

// An agent's credential carries no rights of its own: the account's
// template for agents binds it to its own cluster's subjects, on the real
// server.
func TestAgentCredentialIsBoundToItsCluster(t *testing.T) {
	h := newHub(t)
	alpha, _ := agentCreds(t, h, "alpha")
	c, err := h.login(t, alpha, bus.InboxPrefix("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	// Its own subjects pass: a request to its own inbox answers.
	if _, err := c.nc.SubscribeSync(bus.QuerySubject("alpha")); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Publish(bus.StatusSubject("alpha", "ns", "app"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Another cluster's are refused by the server.
	if _, err := c.nc.SubscribeSync(bus.QuerySubject("beta")); err != nil {
		t.Fatal(err)
	}
	c.refusedSoon(t, "Subscription", bus.QuerySubject("beta"))
	if err := c.nc.Publish(bus.StatusSubject("beta", "ns", "app"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.refusedSoon(t, "Publish", bus.StatusSubject("beta", "ns", "app"))
	if err := c.nc.Publish(bus.WorkSubject("alpha", "ns", "app"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.refusedSoon(t, "Publish", bus.WorkSubject("alpha", "ns", "app"))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		if strings.Contains(err.Error(), bus.QuerySubject("alpha")) || strings.Contains(err.Error(), bus.StatusSubject("alpha", "ns", "app")) {
			t.Errorf("its own subject was refused: %v", err)
		}
	}
}

// The bootstrap credential asks to join (as any cluster) and reads the
// hub's answers, and nothing else.
func TestBootstrapCanOnlyAskToJoin(t *testing.T) {
	h := newHub(t)
	b, err := h.a.Bootstrap("bootstrap", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.login(t, b, bus.BootstrapInboxPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{bus.ClusterSubject("alpha", "join"), bus.ClusterSubject("beta", "join")} {
		if err := c.nc.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	denied := []string{bus.ClusterSubject("alpha", "heartbeat"), bus.StatusSubject("alpha", "ns", "app"),
		"$JS.API.CONSUMER.MSG.NEXT." + bus.StreamWork + "." + bus.AgentConsumer("alpha"), "$JS.API.STREAM.INFO." + bus.StreamWork}
	for _, subj := range denied {
		if err := c.nc.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
		c.refusedSoon(t, "Publish", subj)
	}
	if _, err := c.nc.SubscribeSync(bus.QuerySubject("alpha")); err != nil {
		t.Fatal(err)
	}
	c.refusedSoon(t, "Subscription", bus.QuerySubject("alpha"))
}

// The agents' scoped key cannot mint more than the template: a user JWT it
// signs with rights of its own (every subject) is refused at login, and so
// is one signed by a key the account does not list.
func TestForgedAgentCredentialsRefused(t *testing.T) {
	h := newHub(t)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	wide := jwt.NewUserClaims(pub)
	wide.Name = "alpha"
	wide.IssuerAccount = h.a.ClustersKey()
	wide.Pub.Allow.Add(">")
	wide.Sub.Allow.Add(">")
	stranger, _ := nkeys.CreateAccount()
	for name, signer := range map[string]nkeys.KeyPair{"with its own rights": h.a.AgentSigning, "by a key the account does not list": stranger} {
		token, err := wide.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		file, _ := jwt.FormatUserConfig(token, seed)
		if _, err := h.login(t, file, "_INBOX"); err == nil || !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("a credential signed %s: login %v, want an authorization violation", name, err)
		}
	}
	for _, name := range []string{"a.b", "*", ">", "alpha beta", ""} {
		if _, err := h.iss.Issue(name, pub); err == nil {
			t.Errorf("Issue(%q) signed a credential: a name that is not one subject token", name)
		}
	}
	if _, err := h.iss.Issue("alpha", "not-a-key"); err == nil {
		t.Error("Issue signed for a malformed key")
	}
}

// Revoking a cluster's key closes its agent's connection and refuses its
// next login, with no server restart; a JWT issued for the key after the
// revocation logs in (the cluster accepted again), while the old one
// stays refused: a revocation is never lifted.
func TestRevokedAgentIsShutOut(t *testing.T) {
	h := newHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	file, pub := agentCreds(t, h, "alpha")
	c, err := h.login(t, file, bus.InboxPrefix("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := agentCreds(t, h, "beta")
	b, err := h.login(t, other, bus.InboxPrefix("beta"))
	if err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	if err := h.iss.Revoke(ctx, pub, revokedAt); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the revoked agent's connection is closed", func() (bool, error) {
		return !c.nc.IsConnected(), nil
	})
	if _, err := h.login(t, file, bus.InboxPrefix("alpha")); err == nil {
		t.Fatal("a revoked credential logged in")
	}
	if err := b.nc.Publish(bus.StatusSubject("beta", "ns", "app"), nil); err != nil || b.nc.Flush() != nil || !b.nc.IsConnected() {
		t.Fatalf("another cluster's agent lost its connection: %v", err)
	}
	// Twice is once.
	if err := h.iss.Revoke(ctx, pub, revokedAt); err != nil {
		t.Fatal(err)
	}
	token, err := h.iss.IssueAfter(ctx, "alpha", pub, revokedAt)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := jwt.ParseDecoratedNKey(file)
	seed, _ := kp.Seed()
	again, _ := jwt.FormatUserConfig(token, seed)
	if _, err := h.login(t, again, bus.InboxPrefix("alpha")); err != nil {
		t.Fatalf("accepted again, the agent cannot log in: %v", err)
	}
	if _, err := h.login(t, file, bus.InboxPrefix("alpha")); err == nil {
		t.Fatal("the JWT issued before the revocation logged in again")
	}
}

func TestJoinProof(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, proof, err := creds.SignJoin(kp, "alpha", "alpha.join.1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherPub, _ := other.PublicKey()
	tests := []struct {
		name             string
		cluster, pub, id string
		proof            string
		wantErr          bool
	}{
		{"as signed", "alpha", pub, "alpha.join.1", proof, false},
		{"another cluster", "beta", pub, "alpha.join.1", proof, true},
		{"another join", "alpha", pub, "alpha.join.2", proof, true},
		{"another key", "alpha", otherPub, "alpha.join.1", proof, true},
		{"not a key", "alpha", "UNOTAKEY", "alpha.join.1", proof, true},
		{"garbage proof", "alpha", pub, "alpha.join.1", "!!", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := creds.VerifyJoin(tt.cluster, tt.pub, tt.id, tt.proof)
			if (err != nil) != tt.wantErr {
				t.Fatalf("VerifyJoin = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestCheckCredential(t *testing.T) {
	a, err := creds.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := creds.NewIssuer(a.AgentSigning, a.OperatorSigning, a.ClustersKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	token, err := iss.Issue("alpha", pub)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nkeys.CreateUser()
	otherPub, _ := other.PublicKey()
	if err := creds.CheckCredential(token, "alpha", pub); err != nil {
		t.Errorf("its own credential: %v", err)
	}
	if err := creds.CheckCredential(token, "beta", pub); err == nil {
		t.Error("took a credential naming another cluster")
	}
	if err := creds.CheckCredential(token, "alpha", otherPub); err == nil {
		t.Error("took a credential for another key")
	}
	if err := creds.CheckCredential("garbage", "alpha", pub); err == nil {
		t.Error("took garbage")
	}
}

// A join's key and proof come from anyone holding the bootstrap
// credential: no input makes VerifyJoin panic or pass unsigned.
func FuzzVerifyJoin(f *testing.F) {
	// A fixed key: the fuzzing workers make the same one.
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	pub, proof, _ := creds.SignJoin(kp, "alpha", "alpha.join.1")
	f.Add("alpha", pub, "alpha.join.1", proof)
	f.Add("alpha", pub, "alpha.join.2", proof)
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, cluster, key, id, sig string) {
		// Only the seed's holder signs for its key (ed25519 signatures of
		// one message by one key are one).
		if err := creds.VerifyJoin(cluster, key, id, sig); err == nil && !(key == pub && cluster == "alpha" && id == "alpha.join.1") {
			t.Fatalf("a join of %q (%q) passed with key %q", cluster, id, key)
		}
		_ = creds.CheckCredential(sig, cluster, key)
	})
}

// A site's leaf node's credentials log in only as a leaf node's link: a
// client holding them (copied off the site) is refused, and their rights
// are the site's outbox and inbox, not a cluster's, in the site's own
// account.
func TestSiteLinksAreForLeafNodesOnly(t *testing.T) {
	h := credstest.Start(t, "edge")
	if _, _, err := h.Authority.SiteLinks("elsewhere"); err == nil {
		t.Error("a link for a site with no account")
	}
	link, sys, err := h.Authority.SiteLinks("edge")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"link": link, "system link": sys} {
		if nc, err := h.Server.DialCreds(data); err == nil {
			nc.Close()
			t.Errorf("a client logged in with the site's %s credentials", name)
		}
		token, err := creds.UserJWT(data)
		if err != nil {
			t.Fatal(err)
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(uc.AllowedConnectionTypes, jwt.StringList{jwt.ConnectionTypeLeafnode}) {
			t.Errorf("%s: connection types %v", name, uc.AllowedConnectionTypes)
		}
	}
	token, _ := creds.UserJWT(link)
	uc, _ := jwt.DecodeUserClaims(token)
	want := bus.SiteLinkPermissions("edge")
	if !slices.Equal([]string(uc.Pub.Allow), want.Publish) || !slices.Equal([]string(uc.Sub.Allow), want.Subscribe) {
		t.Errorf("link rights %v / %v, want %v / %v", uc.Pub.Allow, uc.Sub.Allow, want.Publish, want.Subscribe)
	}
	if uc.IssuerAccount != h.Authority.SiteKey("edge") || uc.IssuerAccount == h.Authority.AccountKey() {
		t.Errorf("the link's account is %s, not the site's own %s", uc.IssuerAccount, h.Authority.SiteKey("edge"))
	}
	// A plain user's credentials still log in (the refusal is the type's).
	nc, err := h.Server.DialCreds(h.User(t, "someone", &bus.Permissions{Publish: []string{}, Subscribe: []string{"_INBOX.>"}}))
	if err != nil {
		t.Fatalf("a plain user: %v", err)
	}
	nc.Close()
}

// A site is named by its JetStream domain, which must not be one whose
// API prefix is already the hub's, the services' account's as a site
// account imports it, or a site account's as the services' imports it: a
// site so named would hear, and be asked, what is meant for those.
func TestAddSiteRefusesReservedNames(t *testing.T) {
	a, err := creds.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{
		"edge": true, "factory-7": true, "hub": false, "HUB": false, "flotilla": false,
		"SITE_edge": false, "site_x": false, "a.b": false, "": false, "with space": false,
	} {
		err := a.AddSite(name)
		if ok != (err == nil) {
			t.Errorf("AddSite(%q): %v", name, err)
		}
	}
	if got := a.Sites(); !slices.Equal(got, []string{"edge", "factory-7"}) {
		t.Errorf("sites %v", got)
	}
}
