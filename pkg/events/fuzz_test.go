package events

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecode feeds arbitrary attributes and data to the decoder: it must
// never panic, and whatever it accepts must encode and decode to the same.
func FuzzDecode(f *testing.F) {
	for _, typ := range []string{TypeStepStarted, TypeClusterStatus, TypeStepDispatched, TypeApplicationDeleted, TypeClusterJoin, TypeWork, "x"} {
		f.Add("1.0", "id-1", SourcePlanner, typ, "2026-11-27T10:00:00Z", "application/json", testTraceParent,
			[]byte(`{"namespace":"demo","application":"demo","uid":"u","release":"demo-v1","revision":1,"step":"s","stepType":"deploy","cluster":"c1","phase":"Applied","clusters":["c1"],"heartbeatMillis":5000,"snapshot":{"digest":"sha256:x","objects":[{}]}}`))
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`[{"kind":"ConfigMap"}]`))
	_ = zw.Close()
	f.Add("1.0", "id-2", SourceDispatcher, TypeWork, "2026-11-27T10:00:00Z", "application/json", testTraceParent,
		[]byte(`{"namespace":"demo","application":"demo","uid":"u","release":"demo-v1","revision":1,"cluster":"c1","step":"s","stepIndex":1,"snapshot":{"digest":"sha256:x","gzip":"`+base64.StdEncoding.EncodeToString(gz.Bytes())+`"}}`))
	f.Add("1.0", "", "", "", "", "", "", []byte("null"))
	f.Add("1.0", "i", "::", TypeStepFailed, "2026-11-27T10:00:00.123456789+02:00", "application/json", "zz", []byte(`{"snapshot":{}}`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, ts, ct, tp string, body []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{"ce-specversion": spec, "ce-id": id, "ce-source": source, "ce-type": typ, "ce-time": ts, "content-type": ct, "traceparent": tp} {
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
		if _, err := Decode(msg); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
	})
}
