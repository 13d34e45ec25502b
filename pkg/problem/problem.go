// Package problem owns Flotilla's one error type for what is wrong with
// something a user, a bot or a cluster sent: a CamelCase reason, the word
// conditions, events, metrics and callers branch on, and a message that
// names the object and says what to do. A problem is never retried: the
// input must change. Callers find it in an error chain with As.
package problem

import (
	"errors"
	"fmt"
)

// Error is a problem with an input: Reason is CamelCase (PolicyNotFound,
// WaitingApproval, Forbidden), Message is for people.
type Error struct {
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Message }

// New is a problem with reason and a formatted message.
func New(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// As returns the problem in err's chain, if there is one.
func As(err error) (*Error, bool) {
	var p *Error
	if errors.As(err, &p) {
		return p, true
	}
	return nil, false
}

// Is reports whether err's chain holds a problem with reason.
func Is(err error, reason string) bool {
	p, ok := As(err)
	return ok && p.Reason == reason
}
