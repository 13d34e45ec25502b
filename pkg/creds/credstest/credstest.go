// Package credstest owns the operator-mode NATS server that tests of
// decentralized auth run: a fresh authority (pkg/creds) and a real
// embedded server trusting it.
package credstest

import (
	"path/filepath"
	"testing"

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

// Start starts a server trusting a fresh authority for the test.
func Start(t testing.TB) *Hub {
	t.Helper()
	dir := t.TempDir()
	a, err := creds.LoadOrCreate(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	op, sys, accounts, err := a.Trust()
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.NewWith(t, natstest.Options{Trust: &natstest.Trust{Operator: op, SystemAccount: sys, Accounts: accounts}})
	return &Hub{Authority: a, Server: s, Dir: dir}
}
