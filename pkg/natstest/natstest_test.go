package natstest

import (
	"context"
	"net"
	"os"
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
