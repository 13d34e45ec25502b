// Package devenv owns the whole product on one machine: Jaeger (every
// service exports its spans there over OTLP), the test bed (a hub and
// managed clusters), a NATS server process, the planner, dispatcher and
// gate as separate processes connected only through NATS, and one
// cluster-agent process per managed cluster holding only its own cluster's
// kubeconfig (the second cluster's at an air-gapped site: its own NATS leaf
// node, linked to the hub through a proxy that can be cut, site.go); each
// service serves /metrics on a port of its own. `make up`
// and the end-to-end tests start it the same way. devenv.go is one
// concept, long: the start, in dependency order, of everything above.
package devenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/deploy/admission"
	"github.com/flotilla-dev/flotilla/deploy/crds"
	"github.com/flotilla-dev/flotilla/deploy/liveread"
	natsconf "github.com/flotilla-dev/flotilla/deploy/nats"
	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/jaeger"
	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
	"github.com/flotilla-dev/flotilla/pkg/proc"
	"github.com/flotilla-dev/flotilla/pkg/site"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// Options say where and what to start.
type Options struct {
	// Dir is the state directory (.flotilla): env, kubeconfigs, logs, PIDs, NATS data.
	Dir string
	// BinDir holds Flotilla's binaries and nats-server (bin/); TestbedBinDir the control plane.
	BinDir        string
	TestbedBinDir string
	// JaegerBin is the jaeger binary (`make jaeger`). Empty:
	// $FLOTILLA_JAEGER_BIN, else BinDir/jaeger.
	JaegerBin string
	// Clusters names the managed clusters; empty: two named like the product's IDs.
	Clusters []string
	// Heartbeat of the agents.
	Heartbeat time.Duration
	// Log receives progress lines; nil for none.
	Log func(format string, args ...any)
	// Replicas of each hub service (planner, dispatcher, gate), sharing
	// their consumers; the second is named planner-2 and so on. Zero: 1.
	Replicas int
	// NATSNodes is the hub's NATS: one server, or a cluster of this many
	// (nats-server, nats-server-2, ...) whose streams the services make
	// with as many replicas, at most 3. Zero: 1.
	NATSNodes int
}

// BotKeyID is the demo bot `make up` configures for the webhook.
const BotKeyID = "demo-bot"

// NATSBotKeyID is the demo bot that signs approvals over NATS.
const NATSBotKeyID = "demo-nats-bot"

// BotNamespace is the one namespace the demo's bots may decide in.
const BotNamespace = "demo"

// Env is the running product.
type Env struct {
	Testbed  *testbed.Env
	Clusters []string
	NATSURL  string
	GateURL  string
	Dir      string
	// TLS is what NATS and the webhook serve with: clients trust TLS.CA.
	TLS TLS
	// JaegerURL is Jaeger's query API (http://127.0.0.1:port), where every
	// service's spans go.
	JaegerURL string
	// Metrics maps each service process (planner, dispatcher, gate,
	// agent-<cluster>) to its Prometheus endpoint, http://127.0.0.1:port/metrics.
	Metrics map[string]string
	// OTLPEndpoint is Jaeger's OTLP/HTTP receiver (OTEL_EXPORTER_OTLP_ENDPOINT
	// of every service, with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf).
	OTLPEndpoint string

	opts  Options
	mu    sync.Mutex
	procs []*proc.Process
	cmds  map[string]command
	// stopped are processes stopped on purpose: not reported as dead, nor
	// restarted.
	stopped map[string]bool
	// backoff is each restarted process's crash-loop back-off; crashes
	// every unexpected exit seen, restarted or not (Died).
	backoff         map[string]*restartState
	crashes         []error
	killed          map[*proc.Process]bool
	stopSupervising context.CancelFunc
	supervised      sync.WaitGroup
	// link is the site's link to the hub (nil without a site).
	link *linkproxy.Proxy
	// Site is the air-gapped site (SiteName; "" without one), SiteCluster
	// the cluster there, SiteNATSURL its leaf node, where that cluster's
	// agent connects.
	Site, SiteCluster, SiteNATSURL string
}

type command struct {
	bin       string
	args, env []string
}

// ClusterName returns a name shaped like the product page's cluster IDs.
func ClusterName() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "managedcluster-c" + string(b)
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(format, args...)
	}
}

// Up starts everything and returns when every cluster is accepted, joined
// and available. On failure it stops what it started; the error quotes the
// failed process's log.
func Up(ctx context.Context, o Options) (*Env, error) {
	if len(o.Clusters) == 0 {
		// In the order kubectl lists them, so the demo's <clusterid2>
		// (the second listed) is the second here: the one at the site.
		o.Clusters = []string{ClusterName(), ClusterName()}
		slices.Sort(o.Clusters)
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 2 * time.Second
	}
	for _, b := range []string{"planner", "dispatcher", "gate", "cluster-agent", "kubectl-flotilla", "nats-server"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("devenv: %s missing in %s: run `make build`", b, o.BinDir)
		}
	}
	if o.JaegerBin == "" {
		o.JaegerBin = os.Getenv("FLOTILLA_JAEGER_BIN")
	}
	if o.JaegerBin == "" {
		o.JaegerBin = filepath.Join(o.BinDir, "jaeger")
	}
	if _, err := jaeger.ResolveBin(o.JaegerBin); err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	// Every `up` is a new fleet (new cluster IDs): no state from an earlier one.
	for _, d := range []string{"testbed", "nats", "nats-accounts", "nats-keys", "kubeconfig", "logs", "jaeger", "site-" + SiteName} {
		if err := os.RemoveAll(filepath.Join(o.Dir, d)); err != nil {
			return nil, fmt.Errorf("devenv: %w", err)
		}
	}
	for _, d := range []string{"logs", "kubeconfig", "nats"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("devenv: %w", err)
		}
	}
	env := &Env{Clusters: o.Clusters, Dir: o.Dir, Metrics: map[string]string{}, opts: o, cmds: map[string]command{}, stopped: map[string]bool{},
		backoff: map[string]*restartState{}, killed: map[*proc.Process]bool{}}
	if err := env.up(ctx, o); err != nil {
		env.Down()
		return nil, err
	}
	sctx, stop := context.WithCancel(context.Background())
	env.stopSupervising = stop
	env.supervised.Add(1)
	go env.supervise(sctx)
	return env, nil
}

func (e *Env) up(ctx context.Context, o Options) error {
	began := time.Now()
	// Jaeger first, so the services' first spans have somewhere to go; it
	// stops last.
	j, err := jaeger.Start(ctx, jaeger.Options{Bin: o.JaegerBin, Dir: filepath.Join(o.Dir, "jaeger"), LogFile: filepath.Join(o.Dir, "logs", "jaeger.log")})
	if err != nil {
		return fmt.Errorf("devenv: %w", err)
	}
	e.mu.Lock()
	e.procs = append(e.procs, j.Process())
	e.mu.Unlock()
	e.JaegerURL, e.OTLPEndpoint = j.QueryURL, j.OTLPHTTPEndpoint
	o.logf("Jaeger ready in %v: query API %s, OTLP %s", time.Since(began).Round(10*time.Millisecond), j.QueryURL, j.OTLPHTTPEndpoint)
	otel := j.ExporterEnv()

	o.logf("starting the test bed: hub + %d managed clusters", len(o.Clusters))
	tb, err := testbed.Start(ctx, testbed.Options{Clusters: o.Clusters, Dir: filepath.Join(o.Dir, "testbed"), BinDir: o.TestbedBinDir})
	if err != nil {
		return err
	}
	e.Testbed = tb
	if err := crds.Install(ctx, tb.Hub.Config); err != nil {
		return err
	}
	// A resume request must name its writer (the gate trusts the name).
	if err := admission.Install(ctx, tb.Hub.Config); err != nil {
		return err
	}
	hubKubeconfig := filepath.Join(o.Dir, "kubeconfig", "hub")
	if err := copyFile(tb.Hub.Kubeconfig, hubKubeconfig); err != nil {
		return err
	}
	for _, c := range o.Clusters {
		if err := copyFile(tb.Cluster(c).Kubeconfig, filepath.Join(o.Dir, "kubeconfig", c)); err != nil {
			return err
		}
	}
	o.logf("test bed ready in %v", time.Since(began).Round(100*time.Millisecond))

	// NATS, the gate's webhook, then /metrics of planner, dispatcher, gate and each agent.
	ports, err := testbed.FreePorts(8 + len(o.Clusters))
	if err != nil {
		return err
	}
	metricsAddr := func(name string, port int) []string {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		e.Metrics[name] = "http://" + addr + "/metrics"
		return []string{"--metrics-bind-address", addr}
	}
	// NATS and the webhook speak TLS only, with a CA made here.
	if e.TLS, err = EnsureTLS(filepath.Join(o.Dir, "tls")); err != nil {
		return err
	}
	e.NATSURL = "tls://127.0.0.1:" + strconv.Itoa(ports[0])
	e.GateURL = "https://127.0.0.1:" + strconv.Itoa(ports[1])
	gateCfg, bot, err := writeGateConfig(o.Dir)
	if err != nil {
		return err
	}
	hubLeafPort := ports[6+len(o.Clusters)]
	// One NATS server, or a cluster of NATSNodes (routes between them,
	// JetStream replicated: the services make their streams with as many
	// replicas).
	clientPorts, routePorts := []int{ports[0]}, []int(nil)
	if o.NATSNodes > 1 {
		more, err := testbed.FreePorts(2*o.NATSNodes - 1)
		if err != nil {
			return err
		}
		clientPorts = append(clientPorts, more[:o.NATSNodes-1]...)
		routePorts = more[o.NATSNodes-1:]
	}
	natsConfs, err := e.writeNATSConfig(o, clientPorts, routePorts, hubLeafPort, bot)
	if err != nil {
		return err
	}
	var urls []string
	var nodes []*proc.Process
	for i, conf := range natsConfs {
		name := "nats-server"
		if i > 0 {
			name += "-" + strconv.Itoa(i+1)
		}
		p, err := e.start(o, name, "nats-server", []string{"-c", conf}, nil)
		if err != nil {
			return err
		}
		nodes = append(nodes, p)
		urls = append(urls, "tls://127.0.0.1:"+strconv.Itoa(clientPorts[i]))
	}
	for i, p := range nodes {
		if err := waitNATS(ctx, p, urls[i], nats.UserCredentials(e.Creds("admin")), e.TLS.CA); err != nil {
			return err
		}
	}
	e.NATSURL = strings.Join(urls, ",")
	if err := e.waitJetStream(ctx); err != nil {
		return err
	}
	// The second cluster's site: a leaf node whose one link to the hub
	// runs through a proxy that can be cut.
	if c := siteCluster(o.Clusters); c != "" {
		e.Site, e.SiteCluster = SiteName, c
		linkAddr, err := e.startLink(hubLeafPort)
		if err != nil {
			return err
		}
		sitePort := ports[7+len(o.Clusters)]
		siteConf, err := e.writeSiteConfig(o, sitePort, linkAddr)
		if err != nil {
			return err
		}
		siteProc, err := e.start(o, "nats-site-"+SiteName, "nats-server", []string{"-c", siteConf}, nil)
		if err != nil {
			return err
		}
		e.SiteNATSURL = "tls://127.0.0.1:" + strconv.Itoa(sitePort)
		if err := waitNATS(ctx, siteProc, e.SiteNATSURL, nats.UserCredentials(e.Creds("admin")), e.TLS.CA); err != nil {
			return err
		}
		o.logf("site %s: leaf node %s for %s, its link to the hub through %s (make link-down / make link-up)", SiteName, e.SiteNATSURL, c, linkAddr)
	}

	// Work is sealed with the hub's work key; agents trust its public half.
	workSeal := filepath.Join(o.Dir, "nats-keys", "work-seal.nk")
	workKey, err := sealKey(workSeal)
	if err != nil {
		return err
	}

	// People read live through the hub's API server, which forwards to the
	// dispatcher's live-read API here (deploy/liveread).
	liveReadPort := ports[5+len(o.Clusters)]
	liveReadAddr := "127.0.0.1:" + strconv.Itoa(liveReadPort)
	ca, err := os.ReadFile(e.TLS.CA)
	if err != nil {
		return err
	}
	if err := liveread.Install(ctx, tb.Hub.Config, liveread.Options{CABundle: ca, Address: "localhost:" + strconv.Itoa(liveReadPort)}); err != nil {
		return err
	}

	authority, err := creds.LoadOrCreate(e.Authority())
	if err != nil {
		return err
	}
	// Each service logs in as itself, with only its own rights (bus.*Permissions).
	hubArgs := func(name string) []string {
		return []string{"--kubeconfig", hubKubeconfig, "--nats-url", e.NATSURL, "--nats-creds", e.Creds(name), "--nats-ca", e.TLS.CA, "--log-format", "text",
			"--stream-replicas", strconv.Itoa(min(max(o.NATSNodes, 1), 3))}
	}
	services := []struct {
		name string
		args []string
	}{
		{"planner", hubArgs("planner")},
		{"dispatcher", append(hubArgs("dispatcher"), "--availability-check", "500ms", "--work-seal-key", workSeal, "--site", SiteName,
			"--site-creds", SiteName+"="+e.Creds(siteDispatcherUser(SiteName)),
			// It signs each accepted cluster's agent its credential.
			"--issuer-agent-key", filepath.Join(e.Authority(), "agent-signing.nk"), "--issuer-operator-key", filepath.Join(e.Authority(), "operator-signing.nk"),
			"--nats-account", authority.ClustersKey(), "--nats-system-creds", e.Creds("dispatcher-issuer"),
			"--live-read-listen", liveReadAddr, "--live-read-tls-cert", e.TLS.Cert, "--live-read-tls-key", e.TLS.Key)},
		{"gate", append(hubArgs("gate"), "--config", gateCfg, "--listen", strings.TrimPrefix(e.GateURL, "https://"),
			"--tls-cert", e.TLS.Cert, "--tls-key", e.TLS.Key)},
	}
	for i, s := range services {
		args := append(append([]string(nil), s.args...), metricsAddr(s.name, ports[2+i])...)
		if _, err := e.start(o, s.name, s.name, args, otel); err != nil {
			return err
		}
	}
	// More replicas of each, as a Deployment's: the same identity and
	// consumers, a port of their own for what they serve.
	if o.Replicas > 1 {
		extra, err := testbed.FreePorts(2 * len(services) * (o.Replicas - 1))
		if err != nil {
			return err
		}
		for r := 2; r <= o.Replicas; r++ {
			for _, s := range services {
				name := s.name + "-" + strconv.Itoa(r)
				args := withFlag(s.args, "--listen", "127.0.0.1:"+strconv.Itoa(extra[0]))
				args = withFlag(args, "--live-read-listen", "127.0.0.1:"+strconv.Itoa(extra[0]))
				args = append(args, metricsAddr(name, extra[1])...)
				extra = extra[2:]
				if _, err := e.start(o, name, s.name, args, otel); err != nil {
					return err
				}
			}
		}
	}
	for i, c := range o.Clusters {
		// Only its own cluster's kubeconfig.
		name := "agent-" + c
		natsURL := e.NATSURL
		// It makes its own key and asks to join with the bootstrap
		// credential until the hub accepts it and signs it its own.
		login := []string{"--nats-identity", e.Creds(name), "--nats-bootstrap-creds", e.Creds("bootstrap")}
		if c == e.SiteCluster {
			// Its site's leaf node only, which trusts the hub's operator:
			// it joins and logs in there as at the hub. It also applies
			// bundles carried by hand (kubectl flotilla bundle export).
			natsURL = e.SiteNATSURL
			login = append(login, "--site", e.Site, "--bundle-dir", e.BundleDir(c))
			if err := os.MkdirAll(e.BundleDir(c), 0o700); err != nil {
				return err
			}
		}
		args := append([]string{"--cluster-name", c, "--kubeconfig", filepath.Join(o.Dir, "kubeconfig", c),
			"--nats-url", natsURL, "--nats-ca", e.TLS.CA, "--heartbeat-interval", o.Heartbeat.String(), "--log-format", "text", "--hub-work-key", workKey},
			append(login, metricsAddr(name, ports[5+i])...)...)
		if _, err := e.start(o, name, "cluster-agent", args, otel); err != nil {
			return err
		}
	}
	if err := e.WritePIDs(); err != nil {
		return err
	}

	dyn, err := dynamic.NewForConfig(tb.Hub.Config)
	if err != nil {
		return err
	}
	o.logf("accepting %s as an admin would (kubectl flotilla cluster accept)", strings.Join(o.Clusters, ", "))
	for _, c := range o.Clusters {
		if err := e.waitFor(ctx, "cluster "+c+" to ask to join", func() bool {
			_, err := dyn.Resource(clusterv1.ManagedClusterResource).Get(ctx, c, metav1.GetOptions{})
			return err == nil
		}); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, filepath.Join(o.BinDir, "kubectl-flotilla"), "cluster", "accept", c, "--kubeconfig", hubKubeconfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("devenv: kubectl flotilla cluster accept %s: %w: %s", c, err, out)
		}
	}
	for _, c := range o.Clusters {
		if err := e.waitFor(ctx, "cluster "+c+" to be joined and available", func() bool {
			u, err := dyn.Resource(clusterv1.ManagedClusterResource).Get(ctx, c, metav1.GetOptions{})
			return err == nil && condition(u, clusterv1.ConditionJoined) == "True" && condition(u, clusterv1.ConditionAvailable) == "True"
		}); err != nil {
			return err
		}
	}
	if err := e.waitFor(ctx, "the hub to serve live reads (APIService "+liveread.APIService+")", func() bool {
		u, err := dyn.Resource(apiServices).Get(ctx, liveread.APIService, metav1.GetOptions{})
		return err == nil && condition(u, "Available") == "True"
	}); err != nil {
		return err
	}
	if err := e.writeEnv(o); err != nil {
		return err
	}
	o.logf("up in %v", time.Since(began).Round(100*time.Millisecond))
	return nil
}

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

func condition(u *unstructured.Unstructured, typ string) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// start runs one of Flotilla's processes, logging to Dir/logs/<name>.log.
func (e *Env) start(o Options, name, bin string, args, env []string) (*proc.Process, error) {
	p, err := proc.Start(name, filepath.Join(o.BinDir, bin), args, env, filepath.Join(o.Dir, "logs", name+".log"))
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.cmds[name] = command{bin: bin, args: args, env: env}
	e.mu.Unlock()
	return p, nil
}

// withFlag is args with flag's value set to value, where args has it.
func withFlag(args []string, flag, value string) []string {
	out := slices.Clone(args)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == flag {
			out[i+1] = value
		}
	}
	return out
}

// Process returns the started process of that name (e.g. "agent-<cluster>").
func (e *Env) Process(name string) *proc.Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.procs) - 1; i >= 0; i-- {
		if e.procs[i].Name() == name {
			return e.procs[i]
		}
	}
	return nil
}

// Restart starts a process again (stopping it first if it runs), with the
// arguments and environment it had. Jaeger is not restarted this way: its
// traces live in its memory.
func (e *Env) Restart(name string) (*proc.Process, error) {
	e.mu.Lock()
	c, ok := e.cmds[name]
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("devenv: no restartable process %q", name)
	}
	if p := e.Process(name); p != nil {
		p.Stop(5 * time.Second)
	}
	e.mu.Lock()
	delete(e.stopped, name)
	e.mu.Unlock()
	p, err := e.start(e.opts, name, c.bin, c.args, c.env)
	if err != nil {
		return nil, err
	}
	return p, e.WritePIDs()
}

// Stop stops one process on purpose (Died does not report it).
func (e *Env) Stop(name string) error {
	p := e.Process(name)
	if p == nil {
		return fmt.Errorf("devenv: no process %q", name)
	}
	e.mu.Lock()
	e.stopped[name] = true
	e.mu.Unlock()
	p.Stop(5 * time.Second)
	return nil
}

// Died lists the processes that exited when nobody stopped them, with the
// end of their logs: those restarted since too.
func (e *Env) Died() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := slices.Clone(e.crashes)
	latest := map[string]*proc.Process{}
	for _, p := range e.procs {
		latest[p.Name()] = p
	}
	for name, p := range latest {
		if p.Exited() && !e.stopped[name] && !e.noticed(name, p) && !e.killed[p] {
			out = append(out, p.Failure(errors.New("died")))
		}
	}
	return out
}

// waitFor polls ok until it holds, failing early when a process died.
func (e *Env) waitFor(ctx context.Context, what string, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for !ok() {
		if died := e.Died(); len(died) > 0 {
			return fmt.Errorf("devenv: waiting for %s: %w", what, errors.Join(died...))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devenv: waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Down stops Flotilla's processes (agents and services, then NATS, then
// Jaeger, so the services' last spans reach it), then the test bed, and
// waits for each.
func (e *Env) Down() {
	if e.stopSupervising != nil {
		e.stopSupervising() // nothing is restarted as it is stopped
		e.supervised.Wait()
	}
	e.mu.Lock()
	procs := append([]*proc.Process(nil), e.procs...)
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(5 * time.Second)
	}
	if e.link != nil {
		_ = e.link.Close()
		_ = os.Remove(filepath.Join(e.Dir, "link"))
	}
	if e.Testbed != nil {
		_ = e.Testbed.Stop()
	}
	_ = os.Remove(filepath.Join(e.Dir, "pids"))
}

// PIDs lists every process of the environment, test bed included.
func (e *Env) PIDs() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var pids []int
	if e.Testbed != nil {
		pids = append(pids, e.Testbed.PIDs()...)
	}
	for _, p := range e.procs {
		pids = append(pids, p.PID())
	}
	return pids
}

// WritePIDs records every PID in Dir/pids (one per line), for `make down`.
func (e *Env) WritePIDs() error {
	var b strings.Builder
	for _, pid := range e.PIDs() {
		fmt.Fprintln(&b, pid)
	}
	return os.WriteFile(filepath.Join(e.Dir, "pids"), []byte(b.String()), 0o644)
}

func (e *Env) writeEnv(o Options) error {
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	content := fmt.Sprintf(`# Flotilla dev environment: source this file (make up wrote it).
export KUBECONFIG=%s
export PATH=%s:%s:$PATH
export NATS_URL=%s
export NATS_CREDS=%s
export NATS_CA=%s
export FLOTILLA_CA=%s
export FLOTILLA_GATE_URL=%s
export FLOTILLA_CLUSTERS="%s"
export JAEGER_QUERY_URL=%s
export FLOTILLA_METRICS="%s"
export FLOTILLA_SITE=%s
export FLOTILLA_SITE_CLUSTERS="%s"
export FLOTILLA_SITE_NATS_URL=%s
`, abs(filepath.Join(o.Dir, "kubeconfig", "hub")), abs(o.BinDir), abs(o.TestbedBinDir), e.NATSURL, abs(e.Creds("cli")), abs(e.TLS.CA), abs(e.TLS.CA), e.GateURL, strings.Join(e.Clusters, " "),
		e.JaegerURL, strings.Join(e.metricsList(), " "), e.Site, e.SiteCluster, e.SiteNATSURL)
	return os.WriteFile(filepath.Join(o.Dir, "env"), []byte(content), 0o644)
}

// metricsList is Metrics as name=url entries: planner, dispatcher, gate,
// then the agents in the order of Clusters.
func (e *Env) metricsList() []string {
	names := []string{"planner", "dispatcher", "gate"}
	for _, c := range e.Clusters {
		names = append(names, "agent-"+c)
	}
	var out []string
	for _, n := range names {
		if u, ok := e.Metrics[n]; ok {
			out = append(out, n+"="+u)
		}
	}
	return out
}

// writeGateConfig trusts two demo bots: demo-bot signs webhook calls with the
// HMAC secret in Dir/bot-secret; demo-nats-bot signs NATS events with the
// NKey seed in Dir/bot.nk. Both may name the person who decided.
func writeGateConfig(dir string) (path string, bot nkeys.KeyPair, err error) {
	secretPath := filepath.Join(dir, "bot-secret")
	if _, err := os.Stat(secretPath); err != nil {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		if err := os.WriteFile(secretPath, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			return "", nil, err
		}
	}
	// The NATS bot's key both signs approvals and logs in to NATS.
	bot, err = creds.KeyFile(filepath.Join(dir, "bot.nk"), nkeys.CreateUser)
	if err != nil {
		return "", nil, err
	}
	pub, _ := bot.PublicKey()
	abs, _ := filepath.Abs(secretPath)
	cfg := gate.Config{Identities: []gate.Identity{
		// The demo's bots are trusted in the demo's namespace only.
		{Name: BotKeyID, HMACSecretFile: abs, Delegate: true, Namespaces: []string{BotNamespace}},
		{Name: NATSBotKeyID, NKey: pub, Delegate: true, Namespaces: []string{BotNamespace}},
	}}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "gate.yaml")
	return path, bot, os.WriteFile(path, data, 0o600)
}

// sealKey makes (or reads) the hub's work key: an account NKey, never a
// NATS login (those are user keys: the server would choose what a login
// signs).
func sealKey(path string) (string, error) { return keyFile(path, nkeys.CreateAccount) }

// keyFile returns the public key of the seed in path, made by create
// first if missing (readable by the owner only).
func keyFile(path string, create func() (nkeys.KeyPair, error)) (string, error) {
	seed, err := os.ReadFile(path)
	if err != nil {
		kp, err := create()
		if err != nil {
			return "", err
		}
		if seed, err = kp.Seed(); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
			return "", err
		}
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return "", fmt.Errorf("key %s: %w", path, err)
	}
	return kp.PublicKey()
}

// Creds is the credentials file (user JWT and seed) of a NATS user of the
// hub: "admin" (every right: what an operator and the tests use, no
// service), "planner", "dispatcher", "gate", "cli", "bootstrap" (asks to
// join, nothing else), or "agent-<cluster>" (the agent's own identity:
// its key, and the credential the hub signed for it on accepting it).
func (e *Env) Creds(user string) string { return filepath.Join(e.Dir, "nats-keys", user+".creds") }

// Authority is where the NATS authority's keys are (pkg/creds).
func (e *Env) Authority() string { return filepath.Join(e.Dir, "nats-keys", "authority") }

// writeNATSConfig writes the hub's NATS server configuration: JetStream
// on loopback, and decentralized auth: the server trusts the authority
// `make up` makes (pkg/creds), holds its accounts in a resolver that takes
// pushed revocations, and each identity logs in with its own user JWT:
// the operator (everything), each hub service, the CLI, the demo bot, the
// site's link, the dispatcher's system-account login (it revokes agents),
// and the bootstrap credential agents ask to join with. Agents' own
// credentials are signed by the dispatcher when a cluster is accepted.
func (e *Env) writeNATSConfig(o Options, clientPorts, routePorts []int, leafPort int, bot nkeys.KeyPair) ([]string, error) {
	if err := os.MkdirAll(filepath.Join(o.Dir, "nats-keys"), 0o700); err != nil {
		return nil, err
	}
	storeKey, err := storeKey(filepath.Join(o.Dir, "nats-keys", "jetstream.key"))
	if err != nil {
		return nil, err
	}
	auth, err := creds.LoadOrCreate(e.Authority())
	if err != nil {
		return nil, err
	}
	// The site's own account at the hub, which its link logs in to.
	if err := auth.AddSite(SiteName); err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	botPerms := bus.BotPermissions(BotNamespace)
	users := map[string]func() ([]byte, error){
		"admin": func() ([]byte, error) { return auth.User("admin", nil) },
		"bot":   func() ([]byte, error) { return auth.Bot(NATSBotKeyID, bot, botPerms) },
		"dispatcher-issuer": func() ([]byte, error) {
			return auth.SystemUser("dispatcher-issuer", bus.IssuerPermissions(auth.ClustersKey()))
		},
		"bootstrap": func() ([]byte, error) { return auth.Bootstrap("bootstrap", 0) },
	}
	for name, p := range map[string]bus.Permissions{
		"planner": bus.PlannerPermissions(), "dispatcher": bus.DispatcherPermissions(), "gate": bus.GatePermissions(),
		"cli": bus.CLIPermissions(), "bundler": bus.BundlerPermissions(),
	} {
		users[name] = func() ([]byte, error) { return auth.User(name, &p) }
	}
	// The site's leaf node's two links: its outbox and inbox in its own
	// account at the hub, and the hub's account updates (revocations) to
	// its resolver; and the dispatcher's login in the site's account.
	link, sys, err := auth.SiteLinks(SiteName)
	if err != nil {
		return nil, fmt.Errorf("devenv: %w", err)
	}
	users[leafUser(SiteName)] = func() ([]byte, error) { return link, nil }
	users[siteDispatcherUser(SiteName)] = func() ([]byte, error) { return auth.SiteDispatcher(SiteName) }
	users[leafSystemUser(SiteName)] = func() ([]byte, error) { return sys, nil }
	for name, mk := range users {
		data, err := mk()
		if err != nil {
			return nil, fmt.Errorf("devenv: NATS user %s: %w", name, err)
		}
		if err := creds.WriteFile(e.Creds(name), data); err != nil {
			return nil, err
		}
	}
	var paths []string
	for i, port := range clientPorts {
		// The first node keeps the single server's name and store (a
		// state directory from before stays usable).
		name, store, accounts, file := "flotilla-dev", filepath.Join(o.Dir, "nats"), filepath.Join(o.Dir, "nats-accounts"), filepath.Join(o.Dir, "nats.conf")
		if i > 0 {
			n := strconv.Itoa(i + 1)
			name, store, accounts, file = name+"-"+n, store+"-"+n, accounts+"-"+n, filepath.Join(o.Dir, "nats-"+n+".conf")
		}
		conf := map[string]any{
			"host": "127.0.0.1", "port": port, "server_name": name,
			// Secrets in work, steps and snapshots are encrypted at rest.
			"jetstream": map[string]any{"store_dir": store, "cipher": "chachapoly", "key": storeKey, "domain": site.HubDomain,
				"sync_interval": natsconf.SyncAlways},
			"tls": map[string]any{"cert_file": e.TLS.Cert, "key_file": e.TLS.Key, "timeout": 5},
		}
		if i == 0 {
			// Sites' leaf nodes reach the hub through proxies: the hub
			// tells them no address of its own to try instead.
			conf["leafnodes"] = map[string]any{"host": "127.0.0.1", "port": leafPort, "no_advertise": true,
				"tls": map[string]any{"cert_file": e.TLS.Cert, "key_file": e.TLS.Key, "timeout": 5}}
		}
		if len(routePorts) > 1 {
			var routes []any
			for _, r := range routePorts {
				routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(r))
			}
			conf["cluster"] = map[string]any{"name": "flotilla-dev", "host": "127.0.0.1", "port": routePorts[i], "routes": routes, "no_advertise": true}
		}
		trust, err := auth.ServerConfig(accounts)
		if err != nil {
			return nil, err
		}
		maps.Copy(conf, trust)
		data, err := natsconf.Encode(conf)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return nil, err
		}
		paths = append(paths, file)
	}
	return paths, nil
}

// waitJetStream waits until the hub's JetStream answers (on a cluster: it
// elected its meta leader).
func (e *Env) waitJetStream(ctx context.Context) error {
	nc, err := nats.Connect(e.NATSURL, nats.UserCredentials(e.Creds("admin")), nats.RootCAs(e.TLS.CA))
	if err != nil {
		return fmt.Errorf("devenv: NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("devenv: the hub's JetStream does not answer: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNATS waits until url takes a login (auth: nats.UserCredentials or
// an NKey option).
func waitNATS(ctx context.Context, p *proc.Process, url string, auth nats.Option, ca string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect(url, auth, nats.RootCAs(ca))
		if err == nil {
			nc.Close()
			return nil
		}
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return p.Failure(fmt.Errorf("NATS at %s not reachable: %w", url, err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o600)
}
