package natstest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestServerStoresAndDeliversWithJetStream(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{MemoryStorage: true})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(msg.Data()); got != "hello" || msg.Subject() != "t.a" {
		t.Fatalf("got %q on %s, want hello on t.a", got, msg.Subject())
	}
	if _, err := os.Stat(s.StoreDir()); err != nil {
		t.Fatalf("store dir: %v", err)
	}
	nc.Close()

	addr := s.Addr().String()
	s.Shutdown()
	if _, err := os.Stat(s.StoreDir()); !os.IsNotExist(err) {
		t.Fatalf("store dir %s still there after Shutdown: %v", s.StoreDir(), err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Shutdown", addr)
	}
}

func TestKeepsAGivenStoreDir(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("caller's store dir removed: %v", err)
	}
}

func TestTwoServersRunSideBySide(t *testing.T) {
	a, b := New(t), New(t)
	if a.URL() == b.URL() {
		t.Fatalf("both servers on %s", a.URL())
	}
}

// A server with a small max_payload says so to its clients and refuses
// larger messages; one with users admits only them, each allowed only its
// subjects.
func TestMaxPayloadAndUsers(t *testing.T) {
	alice := User{Name: "alice", Password: "secret", Publish: []string{"ok.>"}, Subscribe: []string{"ok.>", "_INBOX.>"}}
	s := NewWith(t, Options{MaxPayload: 64 << 10, Users: []User{alice}})
	if nc, err := nats.Connect(s.URL()); err == nil {
		nc.Close()
		t.Error("a client without credentials was admitted")
	}
	if nc, err := nats.Connect(s.URL(), nats.UserInfo("alice", "wrong")); err == nil {
		nc.Close()
		t.Error("a wrong password was admitted")
	}
	refused := make(chan error, 8)
	nc, _ := s.Connect(t, alice, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { refused <- err }))
	if got := nc.MaxPayload(); got != 64<<10 {
		t.Errorf("max payload %d, want %d", got, 64<<10)
	}
	if err := nc.Publish("ok.big", make([]byte, 65<<10)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("publishing over max_payload: %v, want ErrMaxPayload", err)
	}
	sub, err := nc.SubscribeSync("ok.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ok.small", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if msg, err := sub.NextMsg(10 * time.Second); err != nil || string(msg.Data) != "hi" {
		t.Fatalf("an allowed publish: %v, %v", msg, err)
	}
	if err := nc.Publish("other.x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `"other.x"`) {
			t.Errorf("refusal %v, want a permissions violation on other.x", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("publishing outside the user's subjects was not refused")
	}
}

func TestInClear(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "streams", "S"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"streams/S/1.blk": "xx s3cr3t yy", "streams/S/meta.inf": "nothing here"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	found, files, err := InClear(dir, "s3cr3t", "absent")
	if err != nil || files != 2 || len(found) != 1 || len(found[filepath.Join(dir, "streams/S/1.blk")]) != 1 {
		t.Fatalf("InClear = %v, %d files, %v", found, files, err)
	}
}

// Three servers make one JetStream: a stream of three replicas stays
// readable and writable with one of them gone.
func TestClusterKeepsAStreamThroughALostNode(t *testing.T) {
	servers := NewCluster(t, 3)
	_, js := ConnectCluster(t, servers)
	ctx := t.Context()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r3.a", []byte("one")); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream is not on three servers: %+v", info.Cluster)
	}
	leader := info.Cluster.Leader
	for _, s := range servers {
		if s.Name() == leader {
			s.Shutdown()
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := js.Publish(ctx, "r3.a", []byte("two"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write 20s after the leader's loss: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m, err := st.GetLastMsgForSubject(ctx, "r3.a")
	if err != nil || string(m.Data) != "two" {
		t.Fatalf("after the leader's loss: %v %v", m, err)
	}
}
