package gate

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

func TestNATSSignature(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	other, _ := nkeys.CreateUser()
	tests := []struct {
		name   string
		signer nkeys.KeyPair
		keyID  string
		want   error
	}{
		{"valid", kp, "bot", nil},
		{"signed by another key", other, "bot", ErrBadSignature},
		{"unknown key id", kp, "stranger", ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, _ := kp.PublicKey()
			cfg := &Config{Identities: []Identity{{Name: "bot", NKey: pub}}}
			e := events.New("id-1", "/bots/x", events.TypeApproval, "", &events.ApprovalData{Namespace: "demo", Application: "demo", PublishVersion: "v1", Step: "s", Decision: "approve", Approver: "alice"})
			msg, _ := events.Encode("s", e)
			if err := SignNATS(msg, tt.keyID, tt.signer); err != nil {
				t.Fatal(err)
			}
			if _, err := cfg.verifyNATS(msg); !errors.Is(err, tt.want) {
				t.Fatalf("verify = %v, want %v", err, tt.want)
			}
		})
	}
	// Tampering with the body, the ID or the time breaks the signature; no signature is refused.
	pub, _ := kp.PublicKey()
	cfg := &Config{Identities: []Identity{{Name: "bot", NKey: pub}}}
	for _, tamper := range []string{"body", "id", "time", "unsigned"} {
		e := events.New("id-1", "/bots/x", events.TypeApproval, "", &events.ApprovalData{Namespace: "demo", Application: "demo", PublishVersion: "v1", Step: "s", Decision: "approve", Approver: "alice"})
		msg, _ := events.Encode("s", e)
		_ = SignNATS(msg, "bot", kp)
		want := ErrBadSignature
		switch tamper {
		case "body":
			msg.Data = []byte(strings.Replace(string(msg.Data), "alice", "mallory", 1))
		case "id":
			msg.Header.Set(events.HeaderID, "id-2")
		case "time":
			msg.Header.Set(events.HeaderTime, "2020-01-01T00:00:00Z")
		case "unsigned":
			msg.Header.Del(HeaderSignature)
			want = ErrUnsigned
		}
		if _, err := cfg.verifyNATS(msg); !errors.Is(err, want) {
			t.Errorf("%s: verify = %v, want %v", tamper, err, want)
		}
	}
}

func TestHTTPSignature(t *testing.T) {
	cfg := &Config{Identities: []Identity{{Name: "demo-bot", HMACSecret: "s3cret"}}}
	body := []byte(`{"namespace":"demo"}`)
	sig := SignHTTP("s3cret", "1700000000", body)
	if !strings.HasPrefix(sig, "v1=") || len(sig) != 3+64 {
		t.Fatalf("signature %q is not v1=<hex sha256>", sig)
	}
	tests := []struct {
		name, key, ts, sig string
		body               []byte
		want               error
	}{
		{"valid", "demo-bot", "1700000000", sig, body, nil},
		{"other timestamp", "demo-bot", "1700000001", sig, body, ErrBadSignature},
		{"other body", "demo-bot", "1700000000", sig, []byte(`{}`), ErrBadSignature},
		{"wrong secret", "demo-bot", "1700000000", SignHTTP("guess", "1700000000", body), body, ErrBadSignature},
		{"unknown key", "nobody", "1700000000", sig, body, ErrUnknownKey},
		{"unsigned", "demo-bot", "1700000000", "", body, ErrUnsigned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cfg.verifyHTTP(tt.key, tt.ts, tt.sig, tt.body); !errors.Is(err, tt.want) {
				t.Fatalf("verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		approvers []string
		name      string
		groups    []string
		want      bool
	}{
		{nil, "anyone", nil, true},
		{[]string{"alice"}, "alice", nil, true},
		{[]string{"alice"}, "bob", nil, false},
		{[]string{"release-managers"}, "bob", []string{"dev", "release-managers"}, true},
		{[]string{"release-managers"}, "release-managers-bot", nil, false},
	}
	for _, tt := range tests {
		if got := allowed(tt.approvers, tt.name, tt.groups); got != tt.want {
			t.Errorf("allowed(%v, %s, %v) = %v", tt.approvers, tt.name, tt.groups, got)
		}
	}
}

func TestDecodeApproval(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"namespace":"demo","application":"demo","publishVersion":"v1","step":"s","decision":"approve","approver":"a"}`, ""},
		{`{"namespace":`, "malformed JSON"},
		{`{"namespace":"demo","decision":"approve"}`, "missing application, approver, publishVersion, step"},
		{`{"namespace":"demo","application":"demo","publishVersion":"v1","step":"s","decision":"maybe","approver":"a"}`, `decision "maybe" is not approve or reject`},
	}
	for _, tt := range tests {
		_, err := DecodeApproval([]byte(tt.body))
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DecodeApproval(%s) = %v, want %q", tt.body, err, tt.want)
		}
	}
}

func FuzzDecodeApproval(f *testing.F) {
	f.Add([]byte(`{"namespace":"demo","application":"demo","publishVersion":"v1","step":"s","decision":"approve","approver":"a"}`))
	f.Add([]byte(`{"decision":"reject"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := DecodeApproval(body)
		if err == nil && (d.Namespace == "" || d.Step == "" || (d.Decision != "approve" && d.Decision != "reject")) {
			t.Fatalf("accepted an incomplete approval %+v", d)
		}
	})
}
