package gate

import (
	"net/http"

	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// Reasons a decision is refused (problem.Error reasons). Every way in
// answers them alike: the webhook with the HTTP status below, NATS by
// terminating the message, the CLI with an ApprovalRefused Event; all are
// audited and counted with the outcome below.
const (
	ReasonUnauthenticated = "Unauthenticated" // bad or missing signature, unknown key, stale timestamp or ce-time
	ReasonForbidden       = "Forbidden"       // the approver may not decide the step (or, by CLI, may not update the Application's status)
	ReasonNotWaiting      = "NotWaiting"      // nothing of the Application waits
	ReasonStale           = "Stale"           // another release waits
	ReasonWrongStep       = "WrongStep"       // another step waits
	ReasonReplayed        = "Replayed"        // the decision's ID was counted before
	ReasonAlreadyDecided  = "AlreadyDecided"  // the step is decided
	ReasonContended       = "Contended"       // too many decisions at once on the step: try again
	ReasonTooLarge        = "TooLarge"        // the body is over MaxBody
	ReasonMalformed       = "Malformed"       // not an approval event
)

// verdict is how a decision's end is answered: HTTP status and the
// flotilla_gate_decisions_total outcome label.
type verdict struct {
	code    int
	outcome string
}

// verdicts is the one table from a refusal's reason to its answer.
var verdicts = map[string]verdict{
	ReasonUnauthenticated: {http.StatusUnauthorized, "unauthenticated"},
	ReasonForbidden:       {http.StatusForbidden, "forbidden"},
	ReasonNotWaiting:      {http.StatusNotFound, "not_waiting"},
	ReasonStale:           {http.StatusConflict, "stale_or_replayed"},
	ReasonWrongStep:       {http.StatusConflict, "stale_or_replayed"},
	ReasonReplayed:        {http.StatusConflict, "stale_or_replayed"},
	ReasonAlreadyDecided:  {http.StatusConflict, "stale_or_replayed"},
	ReasonContended:       {http.StatusConflict, "stale_or_replayed"},
	ReasonTooLarge:        {http.StatusRequestEntityTooLarge, "too_large"},
	ReasonMalformed:       {http.StatusUnprocessableEntity, "malformed"},
}

var (
	recorded = verdict{http.StatusAccepted, "recorded"}
	failed   = verdict{http.StatusInternalServerError, "error"}
)

// verdictOf answers a decision's end: nil is recorded, a refusal its
// reason's verdict, any other error (the gate failed, not the decision)
// an error.
func verdictOf(err error) verdict {
	if err == nil {
		return recorded
	}
	if p, ok := problem.As(err); ok {
		if v, ok := verdicts[p.Reason]; ok {
			return v
		}
	}
	return failed
}

// refuse is a refusal with reason and a message for the sender.
func refuse(reason, format string, args ...any) *problem.Error {
	return problem.New(reason, format, args...)
}

// refused reports whether err is a refusal (the decision must change),
// not a failure of the gate (worth retrying).
func refused(err error) bool {
	_, ok := problem.As(err)
	return ok
}

// retryable reports whether taking a decision again may end otherwise: the
// gate failed, or lost a race too often; a refusal stands.
func retryable(err error) bool {
	return err != nil && (!refused(err) || problem.Is(err, ReasonContended))
}
