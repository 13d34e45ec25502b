package problem

import (
	"errors"
	"fmt"
	"testing"
)

func TestAsFindsTheProblemInAChain(t *testing.T) {
	base := New("PolicyNotFound", "policy %q not found in %s", "cluster-prod", "demo")
	tests := []struct {
		name       string
		err        error
		want       bool
		wantReason string
	}{
		{"itself", base, true, "PolicyNotFound"},
		{"wrapped", fmt.Errorf("resolve demo/demo: %w", base), true, "PolicyNotFound"},
		{"joined", errors.Join(errors.New("other"), base), true, "PolicyNotFound"},
		{"plain error", errors.New("connection refused"), false, ""},
		{"nil", nil, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := As(tt.err)
			if ok != tt.want {
				t.Fatalf("As() ok = %v, want %v", ok, tt.want)
			}
			if ok && p.Reason != tt.wantReason {
				t.Errorf("reason = %q, want %q", p.Reason, tt.wantReason)
			}
			if got := Is(tt.err, "PolicyNotFound"); got != tt.want {
				t.Errorf("Is(PolicyNotFound) = %v, want %v", got, tt.want)
			}
		})
	}
	if got := base.Error(); got != `policy "cluster-prod" not found in demo` {
		t.Errorf("message = %q", got)
	}
	if Is(base, "Other") {
		t.Error("Is matched another reason")
	}
}
