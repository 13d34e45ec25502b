package gate_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/gate"
)

// An unauthenticated sender is refused, then held back: past its burst of
// refusals it gets 429 without the gate looking at (or auditing) its call,
// while a bot that signs right is not held back by refusals of another.
func TestRefusedCallsAreRateLimited(t *testing.T) {
	f := start(t, "limited", &gate.Config{Identities: []gate.Identity{{Name: "bot", HMACSecret: "b", Namespaces: []string{"*"}}}}, gate.Options{})
	body := f.approval("nothing", "approve", "mallory")
	codes := map[int]int{}
	for i := range 30 {
		code, a := f.post("bot", body, map[string]string{gate.HTTPHeaderSignature: fmt.Sprintf("v2=%064x", i)})
		codes[code]++
		if code == http.StatusTooManyRequests && !strings.Contains(a["reason"], "too many refused calls") {
			t.Errorf("429 with reason %q", a["reason"])
		}
	}
	if codes[http.StatusUnauthorized] < 1 || codes[http.StatusTooManyRequests] < 1 || codes[http.StatusUnauthorized] > 21 {
		t.Fatalf("30 forged calls answered %v: want some 401, the rest 429 past the burst", codes)
	}
	metrics := f.metrics()
	if !strings.Contains(metrics, `flotilla_gate_decisions_total{outcome="rate_limited",via="http"}`) {
		t.Errorf("no rate_limited count in the metrics:\n%s", metrics)
	}
}
