package nats_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	natsconf "github.com/flotilla-dev/flotilla/deploy/nats"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/creds/credstest"
	"github.com/flotilla-dev/flotilla/pkg/devenv"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

func TestAuthorization(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	cli := bus.CLIPermissions()
	for _, tt := range []struct {
		name    string
		ids     []natsconf.Identity
		wantErr string
		want    string
	}{
		{name: "none", wantErr: "no identity"},
		{name: "not an NKey", ids: []natsconf.Identity{{NKey: "alice"}}, wantErr: "not a public user NKey"},
		{name: "a key twice", ids: []natsconf.Identity{{NKey: pub}, {NKey: pub}}, wantErr: "twice"},
		{name: "nothing to publish is a deny", ids: []natsconf.Identity{{NKey: pub, Permissions: &cli}}, want: `"deny":[">"]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			users, err := natsconf.Users(tt.ids)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Users = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if compact := strings.Join(strings.Fields(string(users)), ""); !strings.Contains(compact, tt.want) {
				t.Errorf("users.conf lacks %s:\n%s", tt.want, users)
			}
		})
	}
}

func nkeyLogin(t *testing.T, kp nkeys.KeyPair) nats.Option {
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, func(nonce []byte) ([]byte, error) {
		u, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, err
		}
		return u.Sign(nonce)
	})
}

func login(t *testing.T, url, ca string, auth nats.Option, opts ...nats.Option) (*nats.Conn, error) {
	o := append([]nats.Option{auth, nats.Timeout(5 * time.Second)}, opts...)
	if ca != "" {
		o = append(o, nats.RootCAs(ca))
	}
	nc, err := nats.Connect(url, o...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

// deploy/nats's nats.conf, read by the NATS server's own parser with the
// trust.conf Trust writes, makes a server that speaks only TLS, admits
// only users its operator's accounts signed, each with its rights, and
// keeps JetStream's files encrypted: a value published is in none of them.
func TestProductionConfigOnARealServer(t *testing.T) {
	dir := t.TempDir()
	certs, err := devenv.EnsureTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	routes, err := devenv.EnsureTLS(filepath.Join(dir, "routes"))
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	store := filepath.Join(dir, "jetstream")
	for k, v := range map[string]string{"NATS_SERVER_NAME": "nats-0", "NATS_TLS_CERT": certs.Cert, "NATS_TLS_KEY": certs.Key,
		"NATS_TLS_CA": certs.CA, "NATS_ROUTE_CERT": routes.Cert, "NATS_ROUTE_KEY": routes.Key, "NATS_ROUTE_CA": routes.CA, "JETSTREAM_KEY": hex.EncodeToString(key), "JETSTREAM_DIR": store} {
		t.Setenv(k, v)
	}
	authority, err := creds.LoadOrCreate(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := natsconf.Trust(authority, filepath.Join(dir, "accounts"))
	if err != nil {
		t.Fatal(err)
	}
	cli := bus.CLIPermissions()
	operatorCreds, err := authority.User("admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	cliCreds, err := authority.User("cli", &cli)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	for path, data := range map[string][]byte{conf: natsconf.Config, filepath.Join(dir, "trust.conf"): trust,
		filepath.Join(dir, "admin.creds"): operatorCreds, filepath.Join(dir, "cli.creds"): cliCreds} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the server cannot read nats.conf: %v", err)
	}
	if opts.JetStreamCipher != server.ChaCha || opts.JetStreamKey != hex.EncodeToString(key) || opts.TLSConfig == nil || opts.Cluster.TLSConfig == nil || len(opts.Routes) != 3 || len(opts.TrustedOperators) != 1 {
		t.Fatalf("nats.conf: cipher %v, key set %v, TLS %v, route TLS %v, %d routes, %d operators", opts.JetStreamCipher, opts.JetStreamKey != "", opts.TLSConfig != nil, opts.Cluster.TLSConfig != nil, len(opts.Routes), len(opts.TrustedOperators))
	}
	srv := natstest.NewWith(t, natstest.Options{ConfigFile: conf})
	url := srv.URL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("the server's URL is %s, not TLS", url)
	}
	plain := "nats://" + strings.TrimPrefix(url, "tls://")

	admin, cliLogin := filepath.Join(dir, "admin.creds"), filepath.Join(dir, "cli.creds")
	// In clear: refused, even with a valid credential.
	if _, err := login(t, plain, "", nats.UserCredentials(admin)); err == nil {
		t.Error("the server admitted a client in clear")
	}
	// A bare key, and a credential another operator's account signed, over TLS: refused.
	stranger, _ := nkeys.CreateUser()
	if _, err := login(t, url, certs.CA, nkeyLogin(t, stranger)); err == nil {
		t.Error("the server admitted a bare NKey")
	}
	other, err := creds.LoadOrCreate(filepath.Join(dir, "other-authority"))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.User("admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "foreign.creds"), foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := login(t, url, certs.CA, nats.UserCredentials(filepath.Join(dir, "foreign.creds"))); err == nil {
		t.Error("the server admitted another operator's user")
	}
	// The CLI's login: nothing to publish.
	var mu sync.Mutex
	var refused []error
	nc, err := login(t, url, certs.CA, nats.UserCredentials(cliLogin), nats.CustomInboxPrefix(bus.CLIInboxPrefix), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		defer mu.Unlock()
		refused = append(refused, err)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(bus.QuerySubject("c1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := len(refused) > 0 && errors.Is(refused[0], nats.ErrPermissionViolation)
		mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the CLI's login published a live query unrefused")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// At rest: a value published is in no JetStream file.
	op, err := login(t, url, certs.CA, nats.UserCredentials(admin))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	value := "s3cr3t-" + hex.EncodeToString(key[:8])
	if _, err := js.Publish(ctx, "t.secret", []byte(value)); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown() // flushes its files
	found, files, err := natstest.InClear(store, value)
	if err != nil || files == 0 {
		t.Fatalf("read %d JetStream files: %v", files, err)
	}
	for path := range found {
		t.Errorf("%s holds the value in clear", path)
	}
}

// A site's leaf node lists its users (Accounts): its cluster's agent is in
// the clusters' account there too, so that the replies it names write
// none of the site's streams, and still reaches its work, acceptance and
// status through the imports.
func TestSiteAccountsKeepRepliesOut(t *testing.T) {
	dir := t.TempDir()
	adminKey, _ := nkeys.CreateUser()
	agentKey, _ := nkeys.CreateUser()
	adminPub, _ := adminKey.PublicKey()
	agentPub, _ := agentKey.PublicKey()
	p := bus.AgentPermissions("alpha")
	if _, err := natsconf.Accounts([]natsconf.Identity{{NKey: adminPub}}, []natsconf.Identity{{NKey: adminPub, Permissions: &p}}); err == nil {
		t.Error("one key in both accounts was taken")
	}
	accounts, err := natsconf.Accounts([]natsconf.Identity{{NKey: adminPub}}, []natsconf.Identity{{NKey: agentPub, Permissions: &p}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := natsconf.Encode(map[string]any{"jetstream": map[string]any{"store_dir": filepath.Join(dir, "js")}, "accounts": accounts})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "site.conf")
	if err := os.WriteFile(conf, data, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := natstest.NewWith(t, natstest.Options{ConfigFile: conf})
	admin, err := login(t, srv.URL(), "", nkeyLogin(t, adminKey))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := login(t, srv.URL(), "", nkeyLogin(t, agentKey), nats.CustomInboxPrefix(bus.InboxPrefix("alpha")))
	if err != nil {
		t.Fatal(err)
	}
	credstest.ProbeReplies(t, js, credstest.Attacker{Name: "agent", NC: agent, May: p})

	// What it needs passes: its acceptance, its newest work, its status.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := bus.Accepted(ctx, agent, "alpha"); err != nil || !ok {
		t.Errorf("the agent reading its acceptance: %v, %v", ok, err)
	}
	if m, err := bus.LastBySubject(ctx, agent, bus.ClusterAPI, bus.StreamWork, bus.WorkSubject("alpha", "demo", "demo")); err != nil || string(m.Data) != "alpha's work" {
		t.Errorf("the agent reading its work: %v", err)
	}
	ajs, err := jetstream.NewWithAPIPrefix(agent, bus.ClusterAPI)
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := ajs.Publish(ctx, bus.StatusSubject("alpha", "demo", "demo"), []byte("{}")); err != nil || ack.Stream != bus.StreamStatus {
		t.Errorf("the agent's status: %v, %v", ack, err)
	}
}

// A site's leaf node (SiteConfig) trusts the hub's operator: a cluster's
// agent logs in there with the JWT the hub signed, and a revocation at
// the hub reaches the site over the system account's link: the agent's
// connection there closes and its next login is refused.
func TestRevocationReachesASite(t *testing.T) {
	dir := t.TempDir()
	authority, err := creds.LoadOrCreate(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.AddSite("edge"); err != nil {
		t.Fatal(err)
	}
	op, sysKey, accounts, err := authority.Trust()
	if err != nil {
		t.Fatal(err)
	}
	hub := natstest.NewWith(t, natstest.Options{Trust: &natstest.Trust{Operator: op, SystemAccount: sysKey, Accounts: accounts}, LeafNodes: true, Domain: "hub"})
	link, sys, err := authority.SiteLinks("edge")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"link.creds": link, "sys.creds": sys} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := natsconf.SiteConfig(authority, natsconf.Site{Name: "edge", StoreDir: filepath.Join(dir, "site"), ResolverDir: filepath.Join(dir, "site-accounts"),
		HubURL: hub.LeafURL(), LinkCreds: filepath.Join(dir, "link.creds"), SystemCreds: filepath.Join(dir, "sys.creds")})
	if err != nil {
		t.Fatal(err)
	}
	data, err := natsconf.Encode(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A site is one server alone with its data: an acknowledged write is on disk.
	if fo, err := server.ProcessConfigFile(filepath.Join(dir, "site.conf")); err != nil || !fo.SyncAlways {
		t.Errorf("the site's JetStream does not sync every write (%v)", err)
	}
	site := natstest.NewWith(t, natstest.Options{ConfigFile: filepath.Join(dir, "site.conf")})

	issuerLogin, err := authority.SystemUser("dispatcher-issuer", bus.IssuerPermissions(authority.ClustersKey()))
	if err != nil {
		t.Fatal(err)
	}
	snc, _ := hub.ConnectCreds(t, issuerLogin, nats.CustomInboxPrefix(bus.DispatcherInboxPrefix))
	iss, err := creds.NewIssuer(authority.AgentSigning, authority.OperatorSigning, authority.ClustersKey(), snc)
	if err != nil {
		t.Fatal(err)
	}
	agent, pub := (&credstest.Hub{Authority: authority, Server: hub}).AgentKey(t, "edge-1")
	closed := make(chan struct{})
	var once sync.Once
	nc, err := site.DialCreds(agent, nats.CustomInboxPrefix(bus.InboxPrefix("edge-1")), nats.NoReconnect(),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }))
	if err != nil {
		t.Fatalf("the agent's login at its site: %v", err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	time.Sleep(500 * time.Millisecond) // both links up
	revoked := time.Now()
	if err := iss.Revoke(ctx, pub, revoked); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
		t.Logf("revoked at the hub -> the agent's connection at its site closed: %v", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent is still connected at its site 10s later")
	}
	if again, err := site.DialCreds(agent); err == nil {
		again.Close()
		t.Fatal("the revoked agent logged in at its site again")
	}
}
