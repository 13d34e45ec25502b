package gate_test

import (
	"net/http"
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/gate"
)

// A delegate bot records the approver its event names (the person who
// pressed the button); any other identity records its own name, whoever
// the event names.
func TestDelegate(t *testing.T) {
	f := start(t, "delegate", &gate.Config{Identities: []gate.Identity{
		{Name: "chat-bot", HMACSecret: "c", Delegate: true, Namespaces: []string{"*"}},
		{Name: "plain-bot", HMACSecret: "p", Namespaces: []string{"*"}},
	}}, gate.Options{})
	for _, tt := range []struct{ app, bot, want string }{
		{"delegated", "chat-bot", "carol"},
		{"own", "plain-bot", "plain-bot"},
	} {
		f.hold(tt.app, `{"auto":false,"policies":["p"]}`)
		code, a := f.post(tt.bot, f.approval(tt.app, "approve", "carol"), map[string]string{"ce-id": tt.app + "-1"})
		if code != http.StatusAccepted || a["status"] != "recorded" {
			t.Fatalf("%s for carol: %d %v", tt.bot, code, a)
		}
		evs := f.waitDecisions(tt.app, 1)
		if d := evs[0].Data.(*events.StepDecisionData); len(d.Approvals) != 1 || d.Approvals[0].Approver != tt.want {
			t.Errorf("%s naming carol: approvals %+v, want %s recorded", tt.bot, d.Approvals, tt.want)
		}
		if au := f.audit(tt.app, tt.app+"-1"); au.Approver != tt.want || !au.Accepted {
			t.Errorf("%s naming carol: audit %+v, want %s", tt.bot, au, tt.want)
		}
	}
}
