package gate

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Refused webhook calls are limited per caller address: an unauthenticated
// sender (the webhook faces the internet) may fill neither the gate's time
// nor the audit stream. Only refusals spend the allowance: a bot that signs
// its calls right is never held back.
const (
	refusalsPerMinute = 10
	refusalBurst      = 20
	// maxCallers bounds the table of addresses; past it, it starts anew
	// (an attacker spreading over more addresses than this is limited by
	// the audit stream's own bounds).
	maxCallers = 10000
)

// refusalLimits holds each caller address's allowance of refused calls.
type refusalLimits struct {
	mu      sync.Mutex
	callers map[string]*rate.Limiter
}

func newRefusalLimits() *refusalLimits {
	return &refusalLimits{callers: map[string]*rate.Limiter{}}
}

func (l *refusalLimits) of(r *http.Request) *rate.Limiter {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.callers[host]
	if !ok {
		if len(l.callers) >= maxCallers {
			l.callers = map[string]*rate.Limiter{}
		}
		lim = rate.NewLimiter(rate.Every(time.Minute/refusalsPerMinute), refusalBurst)
		l.callers[host] = lim
	}
	return lim
}

// exhausted says whether the caller has used up its refusals for now.
func (l *refusalLimits) exhausted(r *http.Request) bool {
	return l.of(r).Tokens() < 1
}

// spend takes one refusal from the caller's allowance.
func (l *refusalLimits) spend(r *http.Request) {
	l.of(r).Allow()
}
