package gate

import (
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// approvalHeaders are the CloudEvents HTTP binding's headers of an approval.
func approvalHeaders() http.Header {
	h := http.Header{}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-type": events.TypeApproval, "ce-source": "/bots/test", "ce-id": "id-1", "Content-Type": "application/json"} {
		h.Set(k, v)
	}
	return h
}

// What the webhook reads is an approval event, or a Malformed refusal
// saying what is wrong.
func TestDecodeApproval(t *testing.T) {
	tests := []struct {
		name, body string
		header     func(http.Header)
		want       string
	}{
		{"valid", `{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"v1","step":"s","decision":"approve","approver":"a"}`, nil, ""},
		{"charset", `{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"v1","step":"s","decision":"approve","approver":"a"}`,
			func(h http.Header) { h.Set("Content-Type", "application/json; charset=utf-8") }, ""},
		{"truncated", `{"namespace":`, nil, "malformed JSON"},
		{"not an object", `[]`, nil, "malformed JSON"},
		{"missing fields", `{"namespace":"demo","decision":"approve"}`, nil, "missing application, approver, release, step"},
		{"unknown decision", `{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"v1","step":"s","decision":"maybe","approver":"a"}`, nil, `decision "maybe" is not approve or reject`},
		{"structured mode", `{"namespace":"demo"}`, func(h http.Header) { h.Del("ce-specversion"); h.Set("Content-Type", "application/cloudevents+json") }, "ce-specversion"},
		{"no id", `{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"v1","step":"s","decision":"approve","approver":"a"}`, func(h http.Header) { h.Del("ce-id") }, "id"},
		{"other type", `{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"v1","step":"s","decision":"approve","approver":"a","via":"http","code":202}`,
			func(h http.Header) { h.Set("ce-type", events.TypeApprovalAudit) }, "is not " + events.TypeApproval},
		{"unknown type", `{}`, func(h http.Header) { h.Set("ce-type", "dev.flotilla.nothing.v1") }, "unknown"},
		{"text body", `namespace=demo`, func(h http.Header) { h.Set("Content-Type", "text/plain") }, "content-type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := approvalHeaders()
			if tt.header != nil {
				tt.header(h)
			}
			e, d, err := decodeApproval(h, []byte(tt.body))
			if tt.want == "" {
				if err != nil || e.ID != "id-1" || d.Namespace != "demo" {
					t.Fatalf("decodeApproval = %+v, %v", d, err)
				}
				return
			}
			if !problem.Is(err, ReasonMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("decodeApproval(%s) = %v, want a Malformed refusal saying %q", tt.body, err, tt.want)
			}
		})
	}
}

func FuzzDecodeApproval(f *testing.F) {
	f.Add([]byte(`{"namespace":"demo","application":"demo","release":"demo-v1","publishVersion":"v1","step":"s","decision":"approve","approver":"a"}`))
	f.Add([]byte(`{"decision":"reject"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, d, err := decodeApproval(approvalHeaders(), body)
		if err == nil && (d.Namespace == "" || d.Step == "" || (d.Decision != "approve" && d.Decision != "reject")) {
			t.Fatalf("accepted an incomplete approval %+v", d)
		}
		if err != nil && !problem.Is(err, ReasonMalformed) {
			t.Fatalf("refused with %v, want a Malformed refusal", err)
		}
	})
}
