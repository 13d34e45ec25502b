package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS header names of the CloudEvents NATS binding, binary mode. NATS
// headers are case-sensitive: these exact lower-case names are the contract.
const (
	HeaderID          = "ce-id"
	HeaderSource      = "ce-source"
	HeaderType        = "ce-type"
	HeaderSpecVersion = "ce-specversion"
	HeaderTime        = "ce-time"
	HeaderSubject     = "ce-subject"
	HeaderContentType = "content-type"
	// W3C trace context, the CloudEvents distributed-tracing extension.
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"

	specVersion = "1.0"
	contentJSON = "application/json"
)

// Event is a CloudEvent of the catalog with its data decoded.
type Event struct {
	ID      string
	Source  string
	Type    string
	Subject string
	Time    time.Time
	// TraceParent and TraceState carry the W3C trace context.
	TraceParent string
	TraceState  string
	Data        Data
	// Topic is the NATS subject the event arrived on (set by Decode, never
	// sent): consumers check it against who the data claims to be.
	Topic string
	// Stored is when JetStream stored the message (set by DecodeMsg and
	// DecodeStored, never sent): the server's clock, not the sender's.
	Stored time.Time
	// Deliveries is how many times a consumer has been handed the message,
	// this time included (set by DecodeMsg).
	Deliveries uint64
}

// New returns an event stamped now. id must be deterministic for what it
// reports (see the ID helpers), so a republished duplicate is dropped.
func New(id, source, typ, subject string, data Data) *Event {
	return &Event{ID: id, Source: source, Type: typ, Subject: subject, Time: time.Now().UTC(), Data: data}
}

// Encode validates e and returns a message for the NATS subject with the
// attributes in headers and the data as JSON. ce-id is also the Nats-Msg-Id,
// so JetStream drops a duplicate publish.
func Encode(natsSubject string, e *Event) (*nats.Msg, error) {
	if e == nil || e.Data == nil {
		return nil, fmt.Errorf("encode: %w: no data", ErrInvalid)
	}
	if _, ok := newData(e.Type); !ok {
		return nil, fmt.Errorf("encode %s: %w", e.Type, ErrUnknownType)
	}
	if err := e.Data.Validate(); err != nil {
		return nil, fmt.Errorf("encode %s %s: %w: %w", e.Type, e.ID, ErrInvalid, err)
	}
	body, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", e.Type, e.ID, err)
	}
	if err := validateAttributes(e); err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", e.Type, e.ID, err)
	}
	h := nats.Header{}
	h[HeaderSpecVersion] = []string{specVersion}
	h[HeaderID] = []string{e.ID}
	h[HeaderSource] = []string{e.Source}
	h[HeaderType] = []string{e.Type}
	h[HeaderTime] = []string{e.Time.UTC().Format(time.RFC3339Nano)}
	if e.Subject != "" {
		h[HeaderSubject] = []string{e.Subject}
	}
	h[HeaderContentType] = []string{contentJSON}
	if validTraceParent(e.TraceParent) {
		h[HeaderTraceParent] = []string{e.TraceParent}
		if e.TraceState != "" {
			h[HeaderTraceState] = []string{e.TraceState}
		}
	}
	h[nats.MsgIdHdr] = []string{e.ID}
	return &nats.Msg{Subject: natsSubject, Header: h, Data: body}, nil
}

// Decode reads a binary-mode CloudEvent from a NATS message and validates its
// attributes and data. Every error wraps ErrInvalid or ErrUnknownType: the
// message will never decode, so consumers terminate it rather than retry.
func Decode(msg *nats.Msg) (*Event, error) {
	if msg == nil {
		return nil, fmt.Errorf("decode: %w: no message", ErrInvalid)
	}
	e, err := decode(msg.Header, msg.Data)
	if err != nil {
		return nil, err
	}
	e.Topic = msg.Subject
	return e, nil
}

// DecodeMsg decodes a message a JetStream consumer delivered, noting when
// the stream stored it.
func DecodeMsg(m jetstream.Msg) (*Event, error) {
	e, err := Decode(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil {
		return nil, err
	}
	if md, err := m.Metadata(); err == nil {
		e.Stored, e.Deliveries = md.Timestamp, md.NumDelivered
	}
	return e, nil
}

// DecodeStored decodes a message read from a stream directly (by subject
// or sequence), noting when the stream stored it.
func DecodeStored(m *jetstream.RawStreamMsg) (*Event, error) {
	if m == nil {
		return nil, fmt.Errorf("decode: %w: no message", ErrInvalid)
	}
	e, err := Decode(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	if err != nil {
		return nil, err
	}
	e.Stored = m.Time
	return e, nil
}

func decode(h nats.Header, body []byte) (*Event, error) {
	return decodeWith(func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}, body, true)
}

// DecodeHTTP reads a CloudEvent in the HTTP binding's binary mode (ce-*
// headers, any case; JSON body) and validates it as Decode does. Over HTTP
// ce-time is optional (a webhook's own timestamp header dates the call).
// Every error wraps ErrInvalid or ErrUnknownType.
func DecodeHTTP(h http.Header, body []byte) (*Event, error) {
	return decodeWith(func(k string) string {
		v := h.Get(k)
		if k == HeaderContentType {
			// Media type parameters (charset) do not change the data.
			if mt, _, err := mime.ParseMediaType(v); err == nil {
				return mt
			}
		}
		return v
	}, body, false)
}

// decodeWith is the one CloudEvents decoder of both bindings; get reads
// an attribute's header, needTime says whether ce-time must be there.
func decodeWith(get func(string) string, body []byte, needTime bool) (*Event, error) {
	if v := get(HeaderSpecVersion); v != specVersion {
		return nil, fmt.Errorf("decode: %w: %s %q is not %s", ErrInvalid, HeaderSpecVersion, v, specVersion)
	}
	e := &Event{
		ID:      get(HeaderID),
		Source:  get(HeaderSource),
		Type:    get(HeaderType),
		Subject: get(HeaderSubject),
	}
	if ct := get(HeaderContentType); ct != contentJSON {
		return nil, fmt.Errorf("decode %s %s: %w: content-type %q is not %s", e.Type, e.ID, ErrInvalid, ct, contentJSON)
	}
	if ts := get(HeaderTime); ts != "" || needTime {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, fmt.Errorf("decode %s %s: %w: %s %q: %w", e.Type, e.ID, ErrInvalid, HeaderTime, ts, err)
		}
		e.Time = t
	}
	if err := validateAttributes(e); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", e.Type, e.ID, err)
	}
	// An invalid trace context is dropped, not fatal (W3C: start a new trace).
	if tp := get(HeaderTraceParent); validTraceParent(tp) {
		e.TraceParent, e.TraceState = tp, get(HeaderTraceState)
	}
	data, ok := newData(e.Type)
	if !ok {
		return nil, fmt.Errorf("decode %s %s: %w", e.Type, e.ID, ErrUnknownType)
	}
	if err := json.Unmarshal(body, data); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w: data: %w", e.Type, e.ID, ErrInvalid, err)
	}
	if err := data.Validate(); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w: %w", e.Type, e.ID, ErrInvalid, err)
	}
	e.Data = data
	return e, nil
}

// validateAttributes checks the context attributes with the CloudEvents SDK's
// spec validation (id, source as URI-reference, type, time).
func validateAttributes(e *Event) error {
	ce := cloudevents.New(specVersion)
	ce.SetID(e.ID)
	ce.SetSource(e.Source)
	ce.SetType(e.Type)
	ce.SetTime(e.Time)
	if e.Subject != "" {
		ce.SetSubject(e.Subject)
	}
	if len(ce.FieldErrors) > 0 {
		var errs []error
		for k, err := range ce.FieldErrors {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	if err := ce.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

var traceParentRE = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// validTraceParent checks the W3C traceparent shape, rejecting the all-zero
// trace and span IDs and the reserved version ff.
func validTraceParent(s string) bool {
	if !traceParentRE.MatchString(s) {
		return false
	}
	return s[:2] != "ff" && s[3:35] != "00000000000000000000000000000000" && s[36:52] != "0000000000000000"
}
