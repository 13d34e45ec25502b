package gate

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// MaxBody is the largest webhook body accepted.
const MaxBody = 64 << 10

// answer is the webhook's JSON reply.
type answer struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Handler serves POST /v1/approvals: a CloudEvent in HTTP binary mode,
// signed with the caller's HMAC secret.
func (g *Gate) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/approvals", g.serveApproval)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("GET /metrics", telemetry.MetricsHandler(g.metrics))
	return mux
}

func (g *Gate) serveApproval(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if g.limits.exhausted(r) {
		// Counted, not audited: the audit holds what was looked at.
		g.decisions.WithLabelValues(ViaHTTP, "rate_limited").Inc()
		w.Header().Set("Retry-After", "60")
		writeAnswer(w, http.StatusTooManyRequests, answer{Status: "refused", Reason: "too many refused calls from this address: try again later"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) {
			writeAnswer(w, http.StatusBadRequest, answer{Status: "refused", Reason: "cannot read body"})
			return
		}
		g.refuseHTTP(ctx, w, r, "oversized", nil, refuse(ReasonTooLarge, "body over %d bytes", MaxBody))
		return
	}
	id := orText(r.Header.Get(events.HeaderID), "unidentified")
	// Authenticate before looking at anything else.
	ts := r.Header.Get(HTTPHeaderTimestamp)
	ident, err := g.cfg.verifyHTTP(r.Header.Get(HTTPHeaderKeyID), ts, r.Header.Get(events.HeaderID), r.Header.Get(HTTPHeaderSignature), body)
	if err != nil {
		g.refuseHTTP(ctx, w, r, id, nil, refuse(ReasonUnauthenticated, "%v", err))
		return
	}
	e, d, derr := decodeApproval(r.Header, body)
	if err := fresh(ts, g.now()); err != nil {
		g.refuseHTTP(ctx, w, r, id, d, err)
		return
	}
	if derr != nil {
		g.refuseHTTP(ctx, w, r, id, nil, derr)
		return
	}
	err = g.take(ctx, decision{ID: e.ID, Data: d, Via: ViaHTTP, Identity: ident.Name, Groups: ident.Groups, Delegate: ident.Delegate, Namespaces: ident.trusted(), TraceParent: e.TraceParent})
	if refused(err) {
		g.limits.spend(r)
	}
	reply(w, err)
}

// fresh checks a webhook call's signed timestamp against the gate's clock.
func fresh(ts string, now time.Time) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return refuse(ReasonUnauthenticated, "%s %q is not unix seconds", HTTPHeaderTimestamp, ts)
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > MaxSkew || skew < -MaxSkew {
		return refuse(ReasonUnauthenticated, "timestamp is %v off the gate's clock (at most %v)", skew.Round(time.Second), MaxSkew)
	}
	return nil
}

// decodeApproval reads an approval event in the CloudEvents HTTP binding
// (events.DecodeHTTP): a Malformed refusal when it is not one.
func decodeApproval(h http.Header, body []byte) (*events.Event, *events.ApprovalData, error) {
	e, err := events.DecodeHTTP(h, body)
	if err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		if errors.As(err, &syntax) || errors.As(err, &typ) {
			return nil, nil, refuse(ReasonMalformed, "malformed JSON: %v", err)
		}
		return nil, nil, refuse(ReasonMalformed, "want an approval, a CloudEvent in binary mode (ce-specversion 1.0, ce-type %s, ce-source, ce-id, content-type application/json): %v", events.TypeApproval, err)
	}
	d, ok := e.Data.(*events.ApprovalData)
	if !ok || e.Type != events.TypeApproval {
		return nil, nil, refuse(ReasonMalformed, "ce-type %s is not %s", e.Type, events.TypeApproval)
	}
	return e, d, nil
}

// refuseHTTP audits a call refused before it became a decision, spends one
// of its caller's refusals, and answers it.
func (g *Gate) refuseHTTP(ctx context.Context, w http.ResponseWriter, r *http.Request, id string, d *events.ApprovalData, err error) {
	g.limits.spend(r)
	g.audit(ctx, id, d, ViaHTTP, "", err)
	reply(w, err)
}

// reply answers a decision's end: 202 recorded, a refusal with its
// reason's status, 500 when the gate failed.
func reply(w http.ResponseWriter, err error) {
	a := answer{Status: "recorded"}
	if p, ok := problem.As(err); ok {
		a = answer{Status: "refused", Reason: p.Message}
	} else if err != nil {
		a = answer{Status: "error", Reason: err.Error()}
	}
	writeAnswer(w, verdictOf(err).code, a)
}

func writeAnswer(w http.ResponseWriter, code int, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}
