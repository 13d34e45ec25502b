package bundle_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/bus"
)

func msg(cluster, app, data string) bundle.Message {
	return bundle.Message{Subject: bus.WorkSubject(cluster, "demo", app), Header: map[string][]string{"Ce-Id": {"x"}}, Data: []byte(data)}
}

func encode(t *testing.T, b *bundle.Bundle) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := b.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	b, err := bundle.New("prod", time.Unix(1700000000, 0), []bundle.Message{msg("prod", "a", `{"x":1}`), msg("prod", "b", `{"y":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := bundle.Decode(bytes.NewReader(encode(t, b)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Cluster != "prod" || len(got.Messages) != 2 || string(got.Messages[1].Data) != `{"y":2}` || got.Digest != b.Digest {
		t.Fatalf("decoded %+v", got)
	}
	if m := got.Messages[0].Msg(); m.Subject != bus.WorkSubject("prod", "demo", "a") || m.Header.Get("Ce-Id") != "x" {
		t.Fatalf("as a NATS message: %+v", m)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, err := bundle.New("prod", time.Now(), []bundle.Message{msg("prod", "a", `{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	valid := string(encode(t, good))
	tests := []struct {
		name, file, want string
	}{
		{"not JSON", "PK\x03\x04", "not a work bundle"},
		{"another kind", strings.Replace(valid, bundle.Kind, "Other", 1), "kind"},
		{"a bit flipped", strings.Replace(valid, good.Digest[10:20], "0000000000", 1), "damaged or altered"},
		{"unknown field", strings.Replace(valid, `"cluster"`, `"extra": 1, "cluster"`, 1), "unknown field"},
		{"cluster not a name", strings.Replace(valid, `"cluster": "prod"`, `"cluster": "a.b"`, 1), "cluster"},
		{"another cluster's subject", strings.Replace(valid, `"cluster": "prod"`, `"cluster": "test"`, 1), "not cluster test's work"},
		{"empty", `{"apiVersion":"flotilla.dev/v1alpha1","kind":"WorkBundle","cluster":"prod","digest":"x","messages":[]}`, "no work"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bundle.Decode(strings.NewReader(tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := bundle.New("prod", time.Now(), []bundle.Message{msg("test", "a", "{}")}); err == nil {
		t.Error("New took another cluster's work")
	}
}

// A bundle arrives from outside: no input panics the decoder, and what it
// takes is only the named cluster's work with a matching digest.
func FuzzDecode(f *testing.F) {
	b, _ := bundle.New("prod", time.Unix(0, 0), []bundle.Message{msg("prod", "a", `{"x":1}`)})
	var buf bytes.Buffer
	_ = b.Encode(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"apiVersion":"flotilla.dev/v1alpha1","kind":"WorkBundle","cluster":"prod","messages":[{"subject":"flotilla.work.prod.a.b"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := bundle.Decode(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, m := range got.Messages {
			if !bus.SubjectMatches(bus.WorkFilter(got.Cluster), m.Subject) {
				t.Fatalf("took %s in cluster %s's bundle", m.Subject, got.Cluster)
			}
		}
	})
}

func statusMsg(cluster string) bundle.Message {
	return bundle.Message{Subject: bus.StatusSubject(cluster, "demo", "a"), Header: map[string][]string{"Ce-Id": {"r1"}}, Data: []byte(`{"phase":"Applied"}`)}
}

// A status bundle counts only as its agent's: signed with the cluster's
// key, unaltered, and only reports and heartbeats of that cluster.
func TestStatusBundle(t *testing.T) {
	agentKey, _ := nkeys.CreateUser()
	pub, _ := agentKey.PublicKey()
	other, _ := nkeys.CreateUser()
	otherPub, _ := other.PublicKey()
	s, err := bundle.NewStatus("prod", agentKey, time.Now(), []bundle.Message{statusMsg("prod"),
		{Subject: bus.ClusterSubject("prod", "heartbeat"), Data: []byte("{}")}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	valid := buf.String()
	got, err := bundle.DecodeStatus(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(pub); err != nil {
		t.Errorf("signed by the cluster's key: %v", err)
	}
	if err := got.Verify(otherPub); err == nil || !strings.Contains(err.Error(), "not the cluster's") {
		t.Errorf("Verify with another cluster key = %v", err)
	}
	if err := got.Verify(""); err == nil {
		t.Error("a cluster with no key registered took a status bundle")
	}
	// The same reports signed anew by someone else: well formed, not the cluster's.
	forged, _ := bundle.NewStatus("prod", other, time.Now(), got.Messages)
	if err := forged.Verify(pub); err == nil {
		t.Error("a forgery passed")
	}
	tests := []struct{ name, file, want string }{
		{"a report altered", strings.Replace(valid, `"data":"`, `"data":"AAAA`, 1), "damaged or altered"},
		{"the time moved", strings.Replace(valid, `"writtenAt":"20`, `"writtenAt":"19`, 1), "signature is not by the key"},
		{"another cluster named", strings.Replace(valid, `"cluster":"prod"`, `"cluster":"test"`, 1), "not a report or heartbeat of cluster test"},
		{"not a key", strings.Replace(valid, pub, "UNOTAKEY", 1), "not an agent's key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := bundle.DecodeStatus([]byte(tt.file)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeStatus = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := bundle.NewStatus("prod", agentKey, time.Now(), []bundle.Message{{Subject: bus.WorkSubject("prod", "demo", "a")}}); err == nil {
		t.Error("a status bundle carried work")
	}
}

// Status bundles arrive from outside (a file carried by hand): no input
// panics the decoder, and what it takes verifies under the key it names.
func FuzzDecodeStatus(f *testing.F) {
	kp, _ := nkeys.FromRawSeed(nkeys.PrefixByteUser, make([]byte, 32))
	s, _ := bundle.NewStatus("prod", kp, time.Unix(0, 0), []bundle.Message{statusMsg("prod")})
	var buf bytes.Buffer
	_ = s.Encode(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"apiVersion":"flotilla.dev/v1alpha1","kind":"StatusBundle"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := bundle.DecodeStatus(data)
		if err != nil {
			return
		}
		if err := got.Verify(got.NKey); err != nil {
			t.Fatalf("decoded, yet not its key's: %v", err)
		}
	})
}
