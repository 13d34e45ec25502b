package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func stepData() *StepData {
	return &StepData{
		AppRef:   AppRef{Namespace: "demo", Application: "demo", UID: "u1", Release: "demo-v1", Revision: 1, PublishVersion: "version1"},
		Step:     "deploy-test",
		StepType: "deploy",
		Policies: []Policy{{Name: "cluster-test", Type: "topology", Properties: json.RawMessage(`{"clusters":["c1"]}`)}},
		Snapshot: &Snapshot{Digest: "sha256:ab", Objects: []json.RawMessage{json.RawMessage(`{"kind":"Deployment"}`)}},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		typ  string
		data Data
	}{
		{TypeStepStarted, stepData()},
		{TypeStepSuspended, &StepData{AppRef: stepData().AppRef, Step: "deploy-prod", StepType: "deploy", Index: 1, Message: `Waiting approval to the deploy step "deploy-prod"`}},
		{TypeApplicationDeleted, &ApplicationDeletedData{Namespace: "demo", Application: "demo", UID: "u1"}},
		{TypeStepDispatched, &StepDispatchedData{AppRef: stepData().AppRef, Step: "deploy-test", Clusters: []string{"c1"}}},
		{TypeClusterStatus, &ClusterStatusData{AppRef: stepData().AppRef, Cluster: "c1", Phase: ClusterApplied,
			Objects:    []ObjectStatus{{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "demo", Health: HealthCurrent, Replicas: &Replicas{1, 1, 1, 1}}},
			ObservedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{TypeClusterJoin, &ClusterJoinData{Cluster: "c1", KubernetesVersion: "v1.37.2", HeartbeatMillis: 10000, Labels: map[string]string{"env": "test"}}},
		{TypeClusterHeartbeat, &ClusterHeartbeatData{Cluster: "c1", HeartbeatMillis: 10000}},
		{TypeWork, &WorkData{AppRef: stepData().AppRef, Cluster: "c1", Step: "deploy-test", Snapshot: stepData().Snapshot}},
		{TypeWork, &WorkData{AppRef: AppRef{Namespace: "demo", Application: "demo", UID: "u1"}, Cluster: "c1", Delete: true}},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			in := New("id-1", SourcePlanner, tt.typ, "demo/demo", tt.data)
			in.TraceParent, in.TraceState = testTraceParent, "vendor=x"
			msg, err := Encode("flotilla.steps.demo.demo", in)
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range map[string]string{
				"ce-id": "id-1", "ce-source": SourcePlanner, "ce-type": tt.typ, "ce-specversion": "1.0",
				"ce-subject": "demo/demo", "content-type": "application/json",
				"traceparent": testTraceParent, "tracestate": "vendor=x", "Nats-Msg-Id": "id-1",
			} {
				if got := msg.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			out, err := Decode(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !out.Time.Equal(in.Time) {
				t.Errorf("time %v, want %v", out.Time, in.Time)
			}
			out.Time = in.Time
			if out.Topic != "flotilla.steps.demo.demo" {
				t.Errorf("topic %q", out.Topic)
			}
			out.Topic = ""
			if !reflect.DeepEqual(out, in) {
				t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := Encode("s", New("id-1", SourcePlanner, TypeStepStarted, "", stepData()))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mutate  func(m *nats.Msg)
		wantErr error
		want    string
	}{
		{"no specversion", func(m *nats.Msg) { m.Header.Del("ce-specversion") }, ErrInvalid, "ce-specversion"},
		{"spec 0.3", func(m *nats.Msg) { m.Header.Set("ce-specversion", "0.3") }, ErrInvalid, "ce-specversion"},
		{"no id", func(m *nats.Msg) { m.Header.Del("ce-id") }, ErrInvalid, "id"},
		{"no source", func(m *nats.Msg) { m.Header.Del("ce-source") }, ErrInvalid, "source"},
		{"bad time", func(m *nats.Msg) { m.Header.Set("ce-time", "yesterday") }, ErrInvalid, "ce-time"},
		{"xml", func(m *nats.Msg) { m.Header.Set("content-type", "application/xml") }, ErrInvalid, "content-type"},
		{"unknown type", func(m *nats.Msg) { m.Header.Set("ce-type", "dev.flotilla.nope.v1") }, ErrUnknownType, "dev.flotilla.nope.v1"},
		{"upper-case header names are other headers", func(m *nats.Msg) {
			m.Header["CE-ID"] = m.Header["ce-id"]
			delete(m.Header, "ce-id")
		}, ErrInvalid, "id"},
		{"not json", func(m *nats.Msg) { m.Data = []byte("{") }, ErrInvalid, "data"},
		{"missing step", func(m *nats.Msg) {
			m.Data = []byte(`{"namespace":"d","application":"a","release":"a-v1","revision":1,"stepType":"deploy"}`)
		}, ErrInvalid, "step is empty"},
		{"revision zero", func(m *nats.Msg) {
			m.Data = []byte(`{"namespace":"d","application":"a","release":"a-v1","step":"s","stepType":"deploy"}`)
		}, ErrInvalid, "revision 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &nats.Msg{Subject: good.Subject, Header: nats.Header{}, Data: append([]byte(nil), good.Data...)}
			for k, v := range good.Header {
				m.Header[k] = append([]string(nil), v...)
			}
			tt.mutate(m)
			_, err := Decode(m)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode() = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode() = %q, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestDecodeIgnoresUnknownDataFieldsAndBadTraceContext(t *testing.T) {
	e := New("id-1", SourcePlanner, TypeApplicationDeleted, "", &ApplicationDeletedData{Namespace: "n", Application: "a", UID: "u"})
	msg, err := Encode("s", e)
	if err != nil {
		t.Fatal(err)
	}
	msg.Data = []byte(`{"namespace":"n","application":"a","uid":"u","addedInV2":true}`)
	msg.Header.Set("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	got, err := Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got.TraceParent != "" {
		t.Errorf("kept an all-zero trace id: %q", got.TraceParent)
	}
}

func TestEncodeRefusesInvalidEvents(t *testing.T) {
	tests := []struct {
		name string
		e    *Event
		want error
	}{
		{"nil data", New("id", SourcePlanner, TypeStepStarted, "", nil), ErrInvalid},
		{"unknown type", New("id", SourcePlanner, "x.y", "", stepData()), ErrUnknownType},
		{"invalid data", New("id", SourcePlanner, TypeStepStarted, "", &StepData{}), ErrInvalid},
		{"no id", New("", SourcePlanner, TypeStepStarted, "", stepData()), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Encode("s", tt.e); !errors.Is(err, tt.want) {
				t.Fatalf("Encode() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestStepEventIDIsDeterministic(t *testing.T) {
	r := func(uid string, rev int64, attempt int) AppRef {
		return AppRef{UID: uid, Revision: rev, Attempt: attempt}
	}
	a := StepEventID(r("u1", 2, 0), "deploy-prod", TypeStepStarted)
	if a != StepEventID(r("u1", 2, 0), "deploy-prod", TypeStepStarted) {
		t.Fatal("same transition, different IDs")
	}
	if a != "u1.v2.deploy-prod.started" {
		t.Errorf("id = %q", a)
	}
	for _, other := range []string{
		StepEventID(r("u2", 2, 0), "deploy-prod", TypeStepStarted),
		StepEventID(r("u1", 3, 0), "deploy-prod", TypeStepStarted),
		StepEventID(r("u1", 2, 1), "deploy-prod", TypeStepStarted),
		StepEventID(r("u1", 2, 0), "deploy-test", TypeStepStarted),
		StepEventID(r("u1", 2, 0), "deploy-prod", TypeStepSucceeded),
	} {
		if other == a {
			t.Errorf("%q collides", other)
		}
	}
}

func TestDecodeHTTP(t *testing.T) {
	body := []byte(`{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"version1","step":"deploy-prod","decision":"approve","approver":"alice"}`)
	base := func() http.Header {
		h := http.Header{}
		// Go canonicalises header names: the decoder reads them in any case.
		h.Set("Ce-Specversion", "1.0")
		h.Set("Ce-Id", "a-1")
		h.Set("Ce-Source", "/bots/curl")
		h.Set("Ce-Type", TypeApproval)
		h.Set("Content-Type", "application/json")
		return h
	}
	e, err := DecodeHTTP(base(), body)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := e.Data.(*ApprovalData)
	if e.ID != "a-1" || e.Source != "/bots/curl" || e.Type != TypeApproval || !e.Time.IsZero() || !ok || d.Approver != "alice" || d.Step != "deploy-prod" {
		t.Errorf("DecodeHTTP() = %+v, data %+v", e, e.Data)
	}
	with := func(k, v string) http.Header {
		h := base()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	ok1, err := DecodeHTTP(with("Content-Type", "application/json; charset=utf-8"), body)
	if err != nil || ok1.ID != "a-1" {
		t.Errorf("charset parameter: %v", err)
	}
	timed, err := DecodeHTTP(with("ce-time", "2026-12-02T10:00:00Z"), body)
	if err != nil || !timed.Time.Equal(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("ce-time: %v, %v", timed, err)
	}
	tp, err := DecodeHTTP(with("traceparent", testTraceParent), body)
	if err != nil || tp.TraceParent != testTraceParent {
		t.Errorf("traceparent: %+v, %v", tp, err)
	}
	for name, tt := range map[string]struct {
		h    http.Header
		body []byte
		want error
	}{
		"no spec version":  {with("Ce-Specversion", ""), body, ErrInvalid},
		"spec version 0.3": {with("Ce-Specversion", "0.3"), body, ErrInvalid},
		"no id":            {with("Ce-Id", ""), body, ErrInvalid},
		"no source":        {with("Ce-Source", ""), body, ErrInvalid},
		"unknown type":     {with("Ce-Type", "com.example.other"), body, ErrUnknownType},
		"not JSON":         {with("Content-Type", "text/plain"), body, ErrInvalid},
		"bad time":         {with("Ce-Time", "yesterday"), body, ErrInvalid},
		"bad data":         {base(), []byte(`{"namespace":1}`), ErrInvalid},
		"invalid data":     {base(), []byte(`{"namespace":"demo"}`), ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeHTTP(tt.h, tt.body); !errors.Is(err, tt.want) {
				t.Errorf("DecodeHTTP() = %v, want %v", err, tt.want)
			}
		})
	}
}

// A cluster says only so much: over the bounds a report is invalid (the
// planner terminates it), and Trim brings an honest long one within them.
func TestReportBounds(t *testing.T) {
	ref := stepData().AppRef
	obj := func(msg string) ObjectStatus {
		return ObjectStatus{Version: "v1", Kind: "ConfigMap", Name: "c", Health: HealthFailed, Message: msg}
	}
	many := make([]ObjectStatus, MaxReportObjects+1)
	for i := range many {
		many[i] = obj("")
	}
	long := strings.Repeat("é", MaxReportMessage) // two bytes each
	tests := []struct {
		name string
		d    *ClusterStatusData
		ok   bool
	}{
		{"within", &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterApplied, Objects: many[:MaxReportObjects]}, true},
		{"too many objects", &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterApplied, Objects: many}, false},
		{"message too long", &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterFailed, Message: long}, false},
		{"object message too long", &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterFailed, Objects: []ObjectStatus{obj(long)}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.d.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	d := &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterFailed, Message: long, Objects: []ObjectStatus{obj(long)}}
	d.Trim()
	if err := d.Validate(); err != nil {
		t.Fatalf("trimmed report: %v", err)
	}
	if !utf8.ValidString(d.Message) || !utf8.ValidString(d.Objects[0].Message) || !strings.HasSuffix(d.Message, "…") {
		t.Errorf("trimmed messages %q… are not whole characters ending with …", d.Message[:20])
	}
	// Many objects, one of them not Current, last: still unhealthy, and named.
	lots := make([]ObjectStatus, MaxReportObjects+50)
	for i := range lots {
		lots[i] = ObjectStatus{Version: "v1", Kind: "ConfigMap", Name: fmt.Sprintf("c%d", i), Health: HealthCurrent}
	}
	lots[len(lots)-1].Health = HealthInProgress
	big := &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterApplied, Objects: lots}
	if big.Healthy() {
		t.Fatal("a release with an object in progress is healthy")
	}
	big.Trim()
	if err := big.Validate(); err != nil || big.Healthy() || big.Objects[0].Health != HealthInProgress {
		t.Errorf("trimmed: %v, healthy %v, first %+v", err, big.Healthy(), big.Objects[0])
	}
	short := &ClusterStatusData{AppRef: ref, Cluster: "c1", Phase: ClusterFailed, Message: "denied"}
	short.Trim()
	if short.Message != "denied" {
		t.Errorf("a short message became %q", short.Message)
	}
}
