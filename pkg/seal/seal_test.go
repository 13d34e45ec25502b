package seal

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

func keys(t testing.TB) (*Sealer, string) {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	s, err := NewSealer(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := s.PublicKey()
	return s, pub
}

func work(t testing.TB) *nats.Msg {
	t.Helper()
	e := events.New("u1.v1.deploy-prod.c2", events.SourceDispatcher, events.TypeWork, "demo/demo", &events.WorkData{
		AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "u1", Release: "demo-v1", Revision: 1}, Cluster: "c2",
		Snapshot: &events.Snapshot{Digest: "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12", Objects: []json.RawMessage{json.RawMessage(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`)}},
	})
	msg, err := events.Encode("flotilla.work.c2.demo.demo", e)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestSealAndVerify(t *testing.T) {
	s, pub := keys(t)
	other, otherPub := keys(t)
	v, err := NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		change func(m *nats.Msg)
		want   error
	}{
		{"as sealed", func(*nats.Msg) {}, nil},
		{"no seal", func(m *nats.Msg) { m.Header.Del(Header) }, ErrUnsealed},
		{"data changed", func(m *nats.Msg) { m.Data = append(m.Data[:len(m.Data)-1], ' ', '}') }, ErrBadSeal},
		{"for another cluster", func(m *nats.Msg) { m.Subject = "flotilla.work.c1.demo.demo" }, ErrBadSeal},
		{"another event", func(m *nats.Msg) { m.Header.Set(events.HeaderID, "u1.v2.deploy-prod.c2") }, ErrBadSeal},
		{"another time", func(m *nats.Msg) { m.Header.Set(events.HeaderTime, "2020-01-01T00:00:00Z") }, ErrBadSeal},
		{"sealed by another key", func(m *nats.Msg) { _ = other.Seal(m) }, ErrBadSeal},
		{"malformed", func(m *nats.Msg) { m.Header.Set(Header, "v1."+pub) }, ErrBadSeal},
		{"another version", func(m *nats.Msg) { m.Header.Set(Header, "v0.x.y") }, ErrBadSeal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := work(t)
			if err := s.Seal(m); err != nil {
				t.Fatal(err)
			}
			tt.change(m)
			err := v.Verify(m.Subject, m.Header, m.Data)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	// During a rotation both keys are trusted.
	both, err := NewVerifier(pub, otherPub)
	if err != nil {
		t.Fatal(err)
	}
	m := work(t)
	_ = other.Seal(m)
	if err := both.Verify(m.Subject, m.Header, m.Data); err != nil {
		t.Errorf("a key being rotated in: %v", err)
	}
	if _, err := NewVerifier(); err == nil {
		t.Error("a verifier with no key")
	}
	if _, err := NewVerifier("not-a-key"); err == nil {
		t.Error("a verifier of a bad key")
	}
}

// Verify reads headers anyone on the way may have written: it never
// panics, and accepts only the seal made for the bytes.
func FuzzVerify(f *testing.F) {
	s, pub := keys(f)
	v, _ := NewVerifier(pub)
	m := work(f)
	_ = s.Seal(m)
	f.Add(m.Header.Get(Header), m.Subject, m.Data)
	f.Add("v1..", "x", []byte("{}"))
	f.Fuzz(func(t *testing.T, seal, subject string, data []byte) {
		h := nats.Header{}
		for k, vs := range m.Header {
			h[k] = vs
		}
		h.Set(Header, seal)
		err := v.Verify(subject, h, data)
		if err == nil && (seal != m.Header.Get(Header) || subject != m.Subject || string(data) != string(m.Data)) {
			t.Fatalf("a changed message verified: %q %q", seal, subject)
		}
	})
}
