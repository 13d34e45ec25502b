package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// MaxBody is the largest webhook body accepted.
const MaxBody = 64 << 10

// MaxSkew is how far a webhook timestamp may be from the gate's clock.
const MaxSkew = 5 * time.Minute

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

func reply(w http.ResponseWriter, code int, status, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(answer{Status: status, Reason: reason})
}

func (g *Gate) serveApproval(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			g.audit(ctx, "oversized", nil, ViaHTTP, "", refuse(http.StatusRequestEntityTooLarge, "body over %d bytes", MaxBody))
			reply(w, http.StatusRequestEntityTooLarge, "refused", fmt.Sprintf("body over %d bytes", MaxBody))
			return
		}
		reply(w, http.StatusBadRequest, "refused", "cannot read body")
		return
	}
	id := r.Header.Get("ce-id")
	fail := func(code int, format string, args ...any) {
		rf := refuse(code, format, args...)
		var d *events.ApprovalData
		_ = json.Unmarshal(body, &d)
		g.audit(ctx, orText(id, "unidentified"), d, ViaHTTP, "", rf)
		reply(w, code, "refused", rf.Reason)
	}
	// Authenticate before looking at anything else.
	ts := r.Header.Get(HTTPHeaderTimestamp)
	ident, err := g.cfg.verifyHTTP(r.Header.Get(HTTPHeaderKeyID), ts, r.Header.Get(HTTPHeaderSignature), body)
	if err != nil {
		fail(http.StatusUnauthorized, "%v", err)
		return
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		fail(http.StatusUnauthorized, "%s %q is not unix seconds", HTTPHeaderTimestamp, ts)
		return
	}
	if skew := g.now().Sub(time.Unix(sec, 0)); skew > MaxSkew || skew < -MaxSkew {
		fail(http.StatusUnauthorized, "timestamp is %v off the gate's clock (at most %v)", skew.Round(time.Second), MaxSkew)
		return
	}
	if r.Header.Get("ce-specversion") != "1.0" || r.Header.Get("ce-type") != events.TypeApproval || r.Header.Get("ce-source") == "" || id == "" {
		fail(http.StatusUnprocessableEntity, "want a CloudEvent in binary mode: ce-specversion 1.0, ce-type %s, ce-source and ce-id", events.TypeApproval)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		fail(http.StatusUnprocessableEntity, "content-type %q is not application/json", ct)
		return
	}
	d, err := DecodeApproval(body)
	if err != nil {
		fail(http.StatusUnprocessableEntity, "%v", err)
		return
	}
	if err := g.decide(ctx, id, d, ViaHTTP, ident.Name, ident.Groups, ident.Delegate, r.Header.Get("traceparent")); err != nil {
		var rf *Refusal
		if errors.As(err, &rf) {
			reply(w, rf.Code, "refused", rf.Reason)
			return
		}
		reply(w, http.StatusInternalServerError, "error", err.Error())
		return
	}
	reply(w, http.StatusAccepted, "recorded", "")
}

// DecodeApproval reads and validates an approval's data.
func DecodeApproval(body []byte) (*events.ApprovalData, error) {
	d := &events.ApprovalData{}
	if err := json.Unmarshal(body, d); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}
