// Package natstest owns the embedded NATS server that tests and the dev loop
// run: a real nats-server with JetStream, file storage in a temporary
// directory, on a random loopback port.
package natstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
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
	// MaxPayload is the largest message the server accepts, in bytes.
	// Zero: the server's default (1 MiB).
	MaxPayload int32
	// Users, when set, are the only clients the server admits (connect with
	// Server.Connect), each allowed only what its permissions say: the
	// production server's authorization, on the embedded server.
	Users []User
	// ConfigFile, when set, is a server configuration file read by the
	// server's own parser (TLS, JetStream's cipher and store, users): the
	// server runs with it alone (no cluster, no routes to peers), on a
	// random loopback port, with no monitoring port; the other options are
	// ignored.
	ConfigFile string
	// Domain is the server's JetStream domain ("hub" at the hub, a site's
	// name at a leaf node). Empty: none.
	Domain string
	// LeafNodes, when set, accepts leaf node connections on a random
	// loopback port (Server.LeafURL), as the hub does for its sites.
	LeafNodes bool
	// Remote, when set, makes this server a site's leaf node that dials
	// the hub (through the site's link).
	Remote *Remote
	// Cluster, when set, makes the server one of a NATS cluster's
	// (NewCluster starts all of them).
	Cluster *Cluster
	// Trust, when set, runs the server in operator mode (decentralized
	// auth, as production does): clients log in with user JWTs (connect
	// with Server.ConnectCreds), and Users are ignored.
	Trust *Trust
}

// Cluster is a server's place in a NATS cluster: its name there, the
// port its routes listen on, and its peers' route addresses.
type Cluster struct {
	Name, ServerName string
	RoutePort        int
	Routes           []string
}

// Trust is what an operator-mode server trusts: the operator's JWT, its
// system account, and the accounts it starts with, held by a full
// account resolver (in the store directory) that takes pushed updates
// such as revocations.
type Trust struct {
	Operator      string
	SystemAccount string
	// Accounts are JWTs by account public key.
	Accounts map[string]string
}

// Remote is a leaf node's link to the hub.
type Remote struct {
	// URL of the hub's leaf node port, e.g. nats-leaf://127.0.0.1:7422.
	URL string
	// User is how the leaf logs in at the hub (name and password; zero:
	// a hub with no users).
	User User
	// Credentials, when set, is the path of the credentials file (user
	// JWT and seed) the leaf logs in with at an operator-mode hub.
	Credentials string
	// DenyImports and DenyExports are subjects the link never carries in
	// from the hub or out to it.
	DenyImports, DenyExports []string
	// ReconnectInterval between tries to reach the hub. Zero: 100ms.
	ReconnectInterval time.Duration
}

// User is a client the server admits by name and password.
type User struct {
	Name, Password string
	// Publish and Subscribe are the subjects the user may publish and
	// subscribe to (NATS wildcards allowed). Nil: any subject.
	Publish, Subscribe []string
	// AllowResponses lets the user answer the requests it receives (one
	// reply each), whatever Publish says.
	AllowResponses bool
}

func (u User) server() *server.User {
	su := &server.User{Username: u.Name, Password: u.Password}
	if u.Publish == nil && u.Subscribe == nil && !u.AllowResponses {
		return su
	}
	p := &server.Permissions{}
	if u.Publish != nil || u.AllowResponses {
		// With responses allowed and no publish list, nothing else may be published.
		p.Publish = &server.SubjectPermission{Allow: append([]string{}, u.Publish...)}
	}
	if u.Subscribe != nil {
		p.Subscribe = &server.SubjectPermission{Allow: u.Subscribe}
	}
	if u.AllowResponses {
		p.Response = &server.ResponsePermission{MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
	}
	su.Permissions = p
	return su
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	*server.Server
	storeDir    string
	removeStore bool
	leafPort    int
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
	so := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   s.storeDir,
		NoSigs:     true,
		NoLog:      os.Getenv("NATSTEST_LOG") == "",
		MaxPayload: opts.MaxPayload,
	}
	for _, u := range opts.Users {
		so.Users = append(so.Users, u.server())
	}
	if t := opts.Trust; t != nil {
		if err := trust(so, t, filepath.Join(s.storeDir, "accounts")); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	so.JetStreamDomain = opts.Domain
	if c := opts.Cluster; c != nil {
		so.ServerName = c.ServerName
		so.Cluster = server.ClusterOpts{Name: c.Name, Host: "127.0.0.1", Port: c.RoutePort}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				s.cleanup()
				return nil, fmt.Errorf("natstest: route %q: %w", r, err)
			}
			so.Routes = append(so.Routes, u)
		}
	}
	if opts.LeafNodes {
		// Sites reach the hub through proxies: the hub must not tell them
		// its own addresses to try instead.
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("natstest: leaf node port: %w", err)
		}
		s.leafPort = port
		so.LeafNode = server.LeafNodeOpts{Host: "127.0.0.1", Port: port, NoAdvertise: true}
	}
	if r := opts.Remote; r != nil {
		u, err := url.Parse(r.URL)
		if err != nil {
			return nil, fmt.Errorf("natstest: remote %q: %w", r.URL, err)
		}
		if r.User.Name != "" {
			u.User = url.UserPassword(r.User.Name, r.User.Password)
		}
		interval := r.ReconnectInterval
		if interval == 0 {
			interval = 100 * time.Millisecond
		}
		so.LeafNode = server.LeafNodeOpts{ReconnectInterval: interval, Remotes: []*server.RemoteLeafOpts{{
			URLs: []*url.URL{u}, DenyImports: r.DenyImports, DenyExports: r.DenyExports, Credentials: r.Credentials,
		}}}
	}
	if opts.ConfigFile != "" {
		s.cleanup()
		fo, err := server.ProcessConfigFile(opts.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("natstest: %w", err)
		}
		fo.Host, fo.Port, fo.HTTPPort, fo.HTTPHost = "127.0.0.1", server.RANDOM_PORT, 0, ""
		// A lone server: JetStream would wait for the cluster's peers.
		fo.Cluster, fo.Routes = server.ClusterOpts{}, nil
		fo.NoSigs, fo.NoLog = true, true
		so, s.storeDir, s.removeStore = fo, fo.StoreDir, false
	}
	ns, err := server.NewServer(so)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("natstest: new server: %w", err)
	}
	if !so.NoLog {
		// NATSTEST_LOG set: the server's own log on stderr, to debug a test.
		so.Debug = true
		ns.ConfigureLogger()
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
	if !ns.JetStreamEnabled() && opts.Cluster == nil {
		s.Shutdown()
		return nil, errors.New("natstest: JetStream did not start")
	}
	if opts.Trust == nil && opts.ConfigFile == "" {
		// One account: agents' JetStream API (bus.ClusterAPI, which the
		// clusters' account imports in operator mode) is a mapping.
		if err := ns.GlobalAccount().AddMapping(ClusterAPI+".>", "$JS.API.>"); err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("natstest: map the clusters' JetStream API: %w", err)
		}
	}
	return s, nil
}

// ClusterAPI is bus.ClusterAPI (bus's own tests run on this package).
const ClusterAPI = "flotilla.jsapi"

// trust puts the server in operator mode.
func trust(so *server.Options, t *Trust, dir string) error {
	oc, err := jwt.DecodeOperatorClaims(t.Operator)
	if err != nil {
		return fmt.Errorf("natstest: operator: %w", err)
	}
	res, err := server.NewDirAccResolver(dir, 0, 2*time.Minute, server.NoDelete)
	if err != nil {
		return fmt.Errorf("natstest: account resolver: %w", err)
	}
	for pub, token := range t.Accounts {
		if err := res.Store(pub, token); err != nil {
			return fmt.Errorf("natstest: account %s: %w", pub, err)
		}
	}
	so.TrustedOperators = []*jwt.OperatorClaims{oc}
	so.MaxControlLine = 32 << 10 // logins carry JWTs listing services' rights
	so.SystemAccount = t.SystemAccount
	so.AccountResolver = res
	return nil
}

// ConnectCreds connects a client with a credentials file's content (an
// operator-mode server) for the test, closed when it ends.
func (s *Server) ConnectCreds(t testing.TB, creds []byte, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := s.DialCreds(creds, opts...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// DialCreds connects with a credentials file's content, leaving the error
// (a refused login) to the caller.
func (s *Server) DialCreds(creds []byte, opts ...nats.Option) (*nats.Conn, error) {
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, err
	}
	kp, err := jwt.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	return nats.Connect(s.URL(), append([]nats.Option{nats.UserJWTAndSeed(token, string(seed))}, opts...)...)
}

// NewCluster starts a NATS cluster of n servers with JetStream (file
// storage, routes between all), as production runs three, and returns
// once its JetStream has a meta leader. Each is shut down when the test
// ends; a test may shut one down (and start it again with Restart) to
// lose a node.
func NewCluster(t testing.TB, n int) []*Server {
	t.Helper()
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i], routes[i] = p, fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = NewWith(t, Options{Cluster: &Cluster{
			Name: "flotilla-test", ServerName: fmt.Sprintf("n%d", i+1), RoutePort: ports[i], Routes: routes,
		}})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(servers[0].URL())
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
		}
		if err == nil {
			return servers
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: the cluster's JetStream is not up within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// New starts a server for a test and shuts it down when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	return NewWith(t, Options{})
}

// NewWith starts a server with opts for a test and shuts it down when the
// test ends.
func NewWith(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect connects a client as user (a server started with Users) for the
// test, closed when it ends; opts add client options (an inbox prefix, an
// error handler).
func (s *Server) Connect(t testing.TB, user User, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), append([]nats.Option{nats.UserInfo(user.Name, user.Password)}, opts...)...)
	if err != nil {
		t.Fatalf("natstest: connect as %s: %v", user.Name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
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

// LeafURL is where leaf nodes connect (a server started with LeafNodes).
func (s *Server) LeafURL() string {
	if s.leafPort == 0 {
		return ""
	}
	return fmt.Sprintf("nats-leaf://127.0.0.1:%d", s.leafPort)
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

// InClear reads every file under dir (a JetStream store) and reports, per
// file, which of values it holds as they are: what encryption at rest must
// leave none of. files is how many were read, so a caller can tell an
// empty store (which would prove nothing) from a clean one.
func InClear(dir string, values ...string) (found map[string][]string, files int, err error) {
	found = map[string][]string{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, v := range values {
			if bytes.Contains(data, []byte(v)) {
				found[path] = append(found[path], v)
			}
		}
		return nil
	})
	return found, files, err
}

// freePort is a loopback port free now (the server takes it at once).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ConnectCluster connects a client to every server given (failing over
// between them) for the test, closed when it ends.
func ConnectCluster(t testing.TB, servers []*Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(URLs(servers))
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

// URLs is the client address of every server given, as a client that
// fails over between them takes it.
func URLs(servers []*Server) string {
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}

// ForgetDuplicatesAfter shortens the duplicate window of each stream named
// to d and waits until the server forgot the IDs older than it: what a
// service publishes again then is stored again, as it would be after being
// down for longer than the real window (minutes).
func ForgetDuplicatesAfter(t testing.TB, ctx context.Context, js jetstream.JetStream, d time.Duration, streams ...string) {
	t.Helper()
	for _, name := range streams {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		cfg := st.CachedInfo().Config
		cfg.Duplicates = d
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("shorten the duplicate window of %s: %v", name, err)
		}
	}
	time.Sleep(3 * d) // the server purges the IDs it saw once a window passed
}
