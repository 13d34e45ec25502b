package gate

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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
			cfg := &Config{Identities: []Identity{{Name: "bot", NKey: pub, Namespaces: []string{"*"}}}}
			e := events.New("id-1", "/bots/x", events.TypeApproval, "", &events.ApprovalData{Namespace: "demo", Application: "demo", Release: "demo-v1", PublishVersion: "v1", Step: "s", Decision: "approve", Approver: "alice"})
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
	cfg := &Config{Identities: []Identity{{Name: "bot", NKey: pub, Namespaces: []string{"*"}}}}
	for _, tamper := range []string{"body", "id", "time", "unsigned"} {
		e := events.New("id-1", "/bots/x", events.TypeApproval, "", &events.ApprovalData{Namespace: "demo", Application: "demo", Release: "demo-v1", PublishVersion: "v1", Step: "s", Decision: "approve", Approver: "alice"})
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
	cfg := &Config{Identities: []Identity{{Name: "demo-bot", HMACSecret: "s3cret", Namespaces: []string{"*"}}}}
	body := []byte(`{"namespace":"demo"}`)
	sig := SignHTTP("s3cret", "1700000000", "id-1", body)
	if !strings.HasPrefix(sig, "v2=") || len(sig) != 3+64 {
		t.Fatalf("signature %q is not v2=<hex sha256>", sig)
	}
	// What v1 signed: timestamp and body, not the event's ID.
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write([]byte("v1:1700000000:"))
	mac.Write(body)
	v1 := "v1=" + hex.EncodeToString(mac.Sum(nil))
	tests := []struct {
		name, key, ts, id, sig string
		body                   []byte
		want                   error
	}{
		{"valid", "demo-bot", "1700000000", "id-1", sig, body, nil},
		{"other timestamp", "demo-bot", "1700000001", "id-1", sig, body, ErrBadSignature},
		{"other body", "demo-bot", "1700000000", "id-1", sig, []byte(`{}`), ErrBadSignature},
		// A captured call replayed under a new ID (a new decision) does not verify.
		{"other event ID", "demo-bot", "1700000000", "id-2", sig, body, ErrBadSignature},
		{"a v1 signature, which did not cover the ID", "demo-bot", "1700000000", "id-2", v1, body, ErrOldSignature},
		{"wrong secret", "demo-bot", "1700000000", "id-1", SignHTTP("guess", "1700000000", "id-1", body), body, ErrBadSignature},
		{"unknown key", "nobody", "1700000000", "id-1", sig, body, ErrUnknownKey},
		{"unsigned", "demo-bot", "1700000000", "id-1", "", body, ErrUnsigned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cfg.verifyHTTP(tt.key, tt.ts, tt.id, tt.sig, tt.body); !errors.Is(err, tt.want) {
				t.Fatalf("verify = %v, want %v", err, tt.want)
			}
		})
	}
}
