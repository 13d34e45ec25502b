package events

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecode feeds arbitrary attributes and data to the decoder: it must
// never panic, and whatever it accepts must encode and decode to the same.
func FuzzDecode(f *testing.F) {
	for _, typ := range []string{TypeStepStarted, TypeClusterStatus, TypeStepDispatched, TypeApplicationDeleted, TypeClusterJoin, TypeWork, "x"} {
		f.Add("1.0", "id-1", SourcePlanner, typ, "2026-11-27T10:00:00Z", "application/json", testTraceParent, "demo/demo",
			[]byte(`{"namespace":"demo","application":"demo","uid":"u","release":"demo-v1","revision":1,"step":"s","stepType":"deploy","cluster":"c1","phase":"Applied","clusters":["c1"],"heartbeatMillis":5000,"snapshot":{"digest":"sha256:x","objects":[{}]}}`))
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`[{"kind":"ConfigMap"}]`))
	_ = zw.Close()
	f.Add("1.0", "id-2", SourceDispatcher, TypeWork, "2026-11-27T10:00:00Z", "application/json", testTraceParent, "",
		[]byte(`{"namespace":"demo","application":"demo","uid":"u","release":"demo-v1","revision":1,"cluster":"c1","step":"s","stepIndex":1,"snapshot":{"digest":"sha256:x","gzip":"`+base64.StdEncoding.EncodeToString(gz.Bytes())+`"}}`))
	f.Add("1.0", "", "", "", "", "", "", "", []byte("null"))
	f.Add("1.0", "i", "::", TypeStepFailed, "2026-11-27T10:00:00.123456789+02:00", "application/json", "zz", "x", []byte(`{"snapshot":{}}`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, ts, ct, tp, subject string, body []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{"ce-specversion": spec, "ce-id": id, "ce-source": source, "ce-type": typ, "ce-time": ts, "content-type": ct, "traceparent": tp, "ce-subject": subject} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		e, err := Decode(&nats.Msg{Subject: "s", Header: h, Data: body})
		if err != nil {
			return
		}
		msg, err := Encode("s", e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v (%+v)", err, e)
		}
		back, err := Decode(msg)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !back.Time.Equal(e.Time) {
			t.Fatalf("time %v came back as %v", e.Time, back.Time)
		}
		attrs := func(e *Event) [7]string {
			return [7]string{e.ID, e.Source, e.Type, e.Subject, e.TraceParent, e.TraceState, e.Topic}
		}
		if attrs(back) != attrs(e) {
			t.Fatalf("attributes changed on the way: %q became %q", attrs(e), attrs(back))
		}
		// The data compared as it travels (JSON, which compacts raw fields).
		before, _ := json.Marshal(e.Data)
		after, _ := json.Marshal(back.Data)
		if reflect.TypeOf(back.Data) != reflect.TypeOf(e.Data) || !bytes.Equal(before, after) {
			t.Fatalf("data changed on the way:\n%s\n%s", before, after)
		}
	})
}

// FuzzDecodeHTTP feeds arbitrary headers and bodies to the webhook's
// decoder (its input comes from the internet): it must never panic, and
// what it accepts is an event of the catalog with valid data.
func FuzzDecodeHTTP(f *testing.F) {
	f.Add("1.0", "id-1", "/bots/curl", TypeApproval, "", "application/json; charset=utf-8", testTraceParent,
		[]byte(`{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"version1","step":"deploy-prod","decision":"approve","approver":"alice"}`))
	f.Add("1.0", "id-2", "::", TypeApproval, "2026-11-27T10:00:00Z", "application/json", "", []byte(`{}`))
	f.Add("", "", "", "", "", "", "", []byte("null"))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, ts, ct, tp string, body []byte) {
		h := http.Header{}
		for k, v := range map[string]string{"Ce-Specversion": spec, "Ce-Id": id, "Ce-Source": source, "Ce-Type": typ, "Ce-Time": ts, "Content-Type": ct, "Traceparent": tp} {
			if v != "" {
				h.Set(k, v)
			}
		}
		e, err := DecodeHTTP(h, body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrUnknownType", err)
			}
			return
		}
		if e.Data == nil || e.Data.Validate() != nil || e.ID == "" || e.Type == "" {
			t.Fatalf("accepted an invalid event: %+v", e)
		}
	})
}
