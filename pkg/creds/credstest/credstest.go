// Package credstest owns the operator-mode NATS server that tests of
// decentralized auth run: a fresh authority (pkg/creds) and a real
// embedded server trusting it.
package credstest

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// Hub is an operator-mode server and the authority it trusts.
type Hub struct {
	Authority *creds.Authority
	Server    *natstest.Server
	// Dir holds the authority's keys; tests may keep files beside them.
	Dir string
}

// Start starts a server trusting a fresh authority for the test, with an
// account for each of sites (creds.Authority.AddSite).
func Start(t testing.TB, sites ...string) *Hub {
	t.Helper()
	dir := t.TempDir()
	a, err := creds.LoadOrCreate(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		if err := a.AddSite(s); err != nil {
			t.Fatal(err)
		}
	}
	op, sys, accounts, err := a.Trust()
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.NewWith(t, natstest.Options{Trust: &natstest.Trust{Operator: op, SystemAccount: sys, Accounts: accounts}})
	return &Hub{Authority: a, Server: s, Dir: dir}
}

// User is a credentials file of a Flotilla account user with rights p
// (nil: every right in the account, the operator's own login).
func (h *Hub) User(t testing.TB, name string, p *bus.Permissions) []byte {
	t.Helper()
	data, err := h.Authority.User(name, p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Agent is a credentials file of cluster's agent in the clusters'
// account, signed as the dispatcher's issuer signs it on accept.
func (h *Hub) Agent(t testing.TB, cluster string) []byte {
	t.Helper()
	data, _ := h.AgentKey(t, cluster)
	return data
}

// AgentKey is Agent and the agent's public key.
func (h *Hub) AgentKey(t testing.TB, cluster string) ([]byte, string) {
	t.Helper()
	iss, err := creds.NewIssuer(h.Authority.AgentSigning, h.Authority.OperatorSigning, h.Authority.ClustersKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	token, err := iss.Issue(cluster, pub)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	data, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return data, pub
}

// Bot is a credentials file of a chat bot in the bots' account, with the
// rights of namespaces (all: none given).
func (h *Hub) Bot(t testing.TB, name string, namespaces ...string) []byte {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	data, err := h.Authority.Bot(name, kp, bus.BotPermissions(namespaces...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
