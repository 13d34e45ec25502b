package credstest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Attacker is a login that names hostile reply subjects: the agent of
// cluster "alpha", or a holder of the bootstrap credential.
type Attacker struct {
	Name string
	NC   *nats.Conn
	// May is what its user may publish; each subject is tried.
	May bus.Permissions
}

// victim is a subject whose newest message is the hub's state.
type victim struct {
	stream, subject string
}

// ProbeReplies checks that no reply subject an attacker names lets the
// server write the hub's state for it. The server answers a JetStream
// request, and acknowledges a publish into a stream, on whatever reply
// subject the client names, without checking it against the client's
// rights (nats-server #8274 is the same class). With admin (every right in
// the account that holds the streams) it sets the state up: cluster
// beta's registered key, acceptance and credential, its work, a run, and
// alpha's consumer and work; then each attacker publishes to every
// subject it may with each victim as the reply, and the victims' newest
// messages must be what they were.
func ProbeReplies(t testing.TB, admin jetstream.JetStream, attackers ...Attacker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := bus.Setup(ctx, admin, bus.SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	clusters, err := admin.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := admin.KeyValue(ctx, bus.BucketRuns)
	if err != nil {
		t.Fatal(err)
	}
	for key, value := range map[string]string{
		bus.AgentKeyKey("beta"): "UBETAKEY", bus.AcceptedKey("beta"): "true", bus.CredentialKey("beta"): "beta.jwt",
		bus.AcceptedKey("alpha"): "true", bus.CredentialKey("alpha"): "alpha.jwt",
	} {
		if _, err := clusters.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := runs.Put(ctx, "demo.demo", []byte(`{"run":1}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"alpha", "beta"} {
		if _, err := admin.Publish(ctx, bus.WorkSubject(c, "demo", "demo"), []byte(c+"'s work")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CreateOrUpdateConsumer(ctx, bus.StreamWork, bus.AgentConsumerConfig("alpha")); err != nil {
		t.Fatal(err)
	}
	victims := []victim{
		{bus.KVStream(bus.BucketClusters), bus.AgentKeySubject("beta")},
		{bus.KVStream(bus.BucketClusters), bus.AcceptedSubject("beta")},
		{bus.KVStream(bus.BucketClusters), bus.CredentialSubject("beta")},
		{bus.KVStream(bus.BucketClusters), bus.AgentKeySubject("alpha")},
		{bus.KVStream(bus.BucketRuns), "$KV." + bus.BucketRuns + ".demo.demo"},
		{bus.StreamWork, bus.WorkSubject("beta", "demo", "demo")},
		{bus.StreamStatus, bus.StatusSubject("beta", "demo", "demo")},
		{bus.StreamClusters, bus.ClusterSubject("beta", "heartbeat")},
	}
	before := map[victim]uint64{}
	for _, v := range victims {
		before[v] = newest(ctx, t, admin, v)
	}
	for _, a := range attackers {
		for _, subject := range a.May.Publish {
			for _, v := range victims {
				body := []byte("{}")
				if strings.Contains(subject, ".MSG.NEXT.") {
					body = []byte(`{"batch":1,"no_wait":true}`)
				}
				if err := a.NC.PublishRequest(literal(subject), v.subject, body); err != nil {
					t.Fatalf("%s: %v", a.Name, err)
				}
			}
		}
		if err := a.NC.Flush(); err != nil {
			t.Fatalf("%s: %v", a.Name, err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the server's answers are asynchronous
	for _, v := range victims {
		if after := newest(ctx, t, admin, v); after != before[v] {
			t.Errorf("%s: its newest message is now #%d (was #%d): a reply wrote the hub's state", v.subject, after, before[v])
		}
	}
}

// literal is a subject a permission allows, with its wildcards filled in.
func literal(subject string) string {
	toks := strings.Split(subject, ".")
	for i, t := range toks {
		switch t {
		case "*":
			toks[i] = "x"
		case ">":
			toks[i] = "x.y"
		}
	}
	return strings.Join(toks, ".")
}

// newest is the sequence of the newest message on a victim's subject (0: none).
func newest(ctx context.Context, t testing.TB, js jetstream.JetStream, v victim) uint64 {
	t.Helper()
	st, err := js.Stream(ctx, v.stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, v.subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("%s: %v", v.subject, err)
	}
	return m.Sequence
}
