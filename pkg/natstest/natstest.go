// Package natstest owns the embedded NATS server that tests and the dev loop
// run: a real nats-server with JetStream, file storage in a temporary
// directory, on a random loopback port.
package natstest

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options tune the embedded server. The zero value is what tests want.
type Options struct {
	// StoreDir holds JetStream's files. Empty: a temporary directory that
	// Shutdown removes.
	StoreDir string
	// Port to listen on, on 127.0.0.1. Zero: a random free port.
	Port int
	// ReadyTimeout bounds the wait for the server to accept clients. Zero: 10s.
	ReadyTimeout time.Duration
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	*server.Server
	storeDir    string
	removeStore bool
}

// Start starts a server and returns once it accepts connections.
func Start(opts Options) (*Server, error) {
	s := &Server{storeDir: opts.StoreDir}
	if s.storeDir == "" {
		dir, err := os.MkdirTemp("", "flotilla-nats-")
		if err != nil {
			return nil, fmt.Errorf("natstest: %w", err)
		}
		s.storeDir, s.removeStore = dir, true
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  s.storeDir,
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("natstest: new server: %w", err)
	}
	s.Server = ns
	go ns.Start()
	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if !ns.ReadyForConnections(timeout) {
		s.Shutdown()
		return nil, errors.New("natstest: server not ready for connections within " + timeout.String())
	}
	if !ns.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("natstest: JetStream did not start")
	}
	return s, nil
}

// New starts a server for a test and shuts it down when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// JetStream connects a client for the test (closed when it ends).
func (s *Server) JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// URL is the nats:// address clients connect to.
func (s *Server) URL() string { return s.ClientURL() }

// StoreDir is where JetStream keeps its files.
func (s *Server) StoreDir() string { return s.storeDir }

// Shutdown stops the server, waits for it, and removes a temporary store.
func (s *Server) Shutdown() {
	if s.Server != nil {
		s.Server.Shutdown()
		s.WaitForShutdown()
	}
	s.cleanup()
}

func (s *Server) cleanup() {
	if s.removeStore {
		_ = os.RemoveAll(s.storeDir)
	}
}
