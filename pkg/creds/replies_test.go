package creds_test

import (
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds/credstest"
)

// An agent, anyone holding the shared bootstrap credential, or a chat bot
// names the hub's state as the reply subject of everything it may publish: in one
// account the server's answers would write another cluster's registered
// key (blanked, its revocation would be skipped), its acceptance and
// credential, its work, a run. In the clusters' own account
// (bus.ClusterImports) an answer crosses back only to the requester's
// account, where nothing keeps state.
func TestRepliesCannotWriteTheHubsState(t *testing.T) {
	h := newHub(t)
	ch := &credstest.Hub{Authority: h.a, Server: h.s}
	_, admin := h.s.ConnectCreds(t, ch.User(t, "admin", nil))
	alpha, _ := agentCreds(t, h, "alpha")
	boot, err := h.a.Bootstrap("bootstrap", 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := h.login(t, alpha, bus.InboxPrefix("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.login(t, boot, bus.BootstrapInboxPrefix)
	if err != nil {
		t.Fatal(err)
	}
	bot, err := h.login(t, ch.Bot(t, "bot"), bus.BotInboxPrefix)
	if err != nil {
		t.Fatal(err)
	}
	credstest.ProbeReplies(t, admin,
		credstest.Attacker{Name: "agent", NC: a.nc, May: bus.AgentPermissions("alpha")},
		credstest.Attacker{Name: "bootstrap", NC: b.nc, May: bus.BootstrapPermissions()},
		credstest.Attacker{Name: "bot", NC: bot.nc, May: bus.BotPermissions()})
}
