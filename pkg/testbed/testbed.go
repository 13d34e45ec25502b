// Package testbed owns Flotilla's real Kubernetes environment for tests, the
// demo and benchmarks: one etcd, one hub API server that stores and runs
// nothing (the product's "Fleet instance"), and N managed clusters, each an API
// server with kube-controller-manager, kube-scheduler and kwok driving one fake
// Node, so a Deployment really becomes Ready. The binaries come from
// `make testbed` (hack/testbed), built from Go modules: no Docker, no downloads.
// testbed.go is one concept, long: starting and stopping that environment,
// process by process, in dependency order.
package testbed

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flotilla-dev/flotilla/pkg/proc"
)

// HubName is the name of the hub cluster; no managed cluster may take it.
const HubName = "hub"

// Binaries are the programs `make testbed` builds and Start needs.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"}

// nodeLeaseSeconds is the duration of each fake node's Lease in kube-node-lease.
const nodeLeaseSeconds = 40

//go:embed kwok-stages.yaml
var kwokStages []byte

// Options say what to start.
type Options struct {
	// Clusters names the managed clusters, each a DNS-1123 label, unique,
	// not HubName. None: the hub alone (tests of hub-only services).
	Clusters []string
	// Dir receives PKI, kubeconfigs, etcd data and logs. Empty: a new
	// temporary directory that Stop removes.
	Dir string
	// BinDir holds the binaries from `make testbed`. Empty: $FLOTILLA_TESTBED_BIN,
	// else bin/testbed in the Flotilla module above the working directory.
	BinDir string
	// StartTimeout bounds Start. Zero: two minutes.
	StartTimeout time.Duration
}

// Cluster is one started API server.
type Cluster struct {
	Name string
	// Managed is false for the hub, which runs no controllers and no nodes.
	Managed bool
	// URL is the API server's https address on loopback.
	URL string
	// Config is an admin (system:masters) client config.
	Config *rest.Config
	// Kubeconfig is the path of a self-contained admin kubeconfig file.
	Kubeconfig string
}

// Env is a running test bed. Stop it when done.
type Env struct {
	// Hub is the hub API server.
	Hub *Cluster
	// Clusters are the managed clusters, in the order of Options.Clusters.
	Clusters []*Cluster
	// Dir holds the test bed's files; logs are under Dir/logs.
	Dir string
	// BinDir holds the binaries, kubectl among them.
	BinDir string

	removeDir bool
	mu        sync.Mutex
	procs     []*tracked
	stopped   bool
}

// tracked is a process and the tier it stops in: higher tiers stop first.
type tracked struct {
	*proc.Process
	tier int
}

// Stop tiers: kwok, scheduler and controller manager, then API servers, then etcd.
const (
	tierEtcd = iota
	tierAPIServer
	tierController
)

// Cluster returns the cluster (hub or managed) with that name, or nil.
func (e *Env) Cluster(name string) *Cluster {
	if e.Hub != nil && e.Hub.Name == name {
		return e.Hub
	}
	for _, c := range e.Clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// PIDs returns the process IDs of everything the test bed started.
func (e *Env) PIDs() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	pids := make([]int, 0, len(e.procs))
	for _, p := range e.procs {
		pids = append(pids, p.PID())
	}
	return pids
}

// Validate reports what is wrong with the options, before anything starts.
func (o Options) Validate() error {
	seen := map[string]bool{}
	var errs []error
	for _, name := range o.Clusters {
		switch {
		case name == HubName:
			errs = append(errs, fmt.Errorf("testbed: cluster name %q is reserved for the hub", name))
		case seen[name]:
			errs = append(errs, fmt.Errorf("testbed: duplicate cluster name %q", name))
		default:
			if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("testbed: cluster name %q is not a DNS-1123 label: %s", name, strings.Join(msgs, "; ")))
			}
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// Start starts etcd, the hub and every managed cluster, and returns when all
// API servers answer /readyz and every managed cluster has a Ready node and
// a running controller manager. On failure it stops whatever it started and
// the error names the process and quotes the end of its log.
func Start(ctx context.Context, opts Options) (*Env, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	binDir, err := resolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	env := &Env{Dir: opts.Dir, BinDir: binDir}
	if env.Dir == "" {
		if env.Dir, err = os.MkdirTemp("", "flotilla-testbed-"); err != nil {
			return nil, fmt.Errorf("testbed: %w", err)
		}
		env.removeDir = true
	} else if err := os.MkdirAll(env.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	if err := env.start(ctx, binDir, opts.Clusters); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return env, nil
}

func (e *Env) start(ctx context.Context, binDir string, managed []string) error {
	etcdURL, err := e.startEtcd(ctx, binDir)
	if err != nil {
		return err
	}

	names := append([]string{HubName}, managed...)
	clusters := make([]*Cluster, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			clusters[i], errs[i] = e.startCluster(ctx, binDir, etcdURL, name, i > 0)
		})
	}
	wg.Wait()
	e.Hub, e.Clusters = clusters[0], clusters[1:]
	return errors.Join(errs...)
}

func (e *Env) startEtcd(ctx context.Context, binDir string) (string, error) {
	ports, err := FreePorts(2)
	if err != nil {
		return "", fmt.Errorf("testbed: etcd ports: %w", err)
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	p, err := e.run("etcd", filepath.Join(binDir, "etcd"), []string{
		"--name=testbed",
		"--data-dir=" + filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=testbed=" + peer,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, tierEtcd)
	if err != nil {
		return "", err
	}
	if err := waitHTTP(ctx, p, http.DefaultClient, client+"/health"); err != nil {
		return "", p.Failure(err)
	}
	return client, nil
}

func (e *Env) startCluster(ctx context.Context, binDir, etcdURL, name string, managed bool) (*Cluster, error) {
	dir := filepath.Join(e.Dir, "clusters", name)
	keys, err := newPKI(filepath.Join(dir, "pki"), name)
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	ports, err := FreePorts(1)
	if err != nil {
		return nil, fmt.Errorf("testbed: %s ports: %w", name, err)
	}
	url := "https://127.0.0.1:" + strconv.Itoa(ports[0])
	api, err := e.run(name+"/kube-apiserver", filepath.Join(binDir, "kube-apiserver"), []string{
		"--etcd-servers=" + etcdURL,
		"--etcd-prefix=/" + name,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[0]),
		"--cert-dir=" + filepath.Join(dir, "pki"),
		"--tls-cert-file=" + keys.servingCertFile(),
		"--tls-private-key-file=" + keys.servingKeyFile(),
		"--client-ca-file=" + keys.caFile(),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + keys.saPubFile(),
		"--service-account-signing-key-file=" + keys.saKeyFile(),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// The aggregation layer: Flotilla's live reads are an aggregated
		// API, told who is asking by these headers under the front proxy's
		// certificate.
		"--requestheader-client-ca-file=" + keys.frontProxyCAFile(),
		"--requestheader-allowed-names=" + FrontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + keys.frontProxyCertFile(),
		"--proxy-client-key-file=" + keys.frontProxyKeyFile(),
		// On loopback the default lease reconciler makes the server exit.
		"--endpoint-reconciler-type=none",
	}, tierAPIServer)
	if err != nil {
		return nil, err
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg, err := writeKubeconfig(kubeconfig, name, url, keys)
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("testbed: %s client: %w", name, err)
	}
	if err := waitHTTP(ctx, api, httpClient, url+"/readyz"); err != nil {
		return nil, api.Failure(err)
	}
	c := &Cluster{Name: name, Managed: managed, URL: url, Config: cfg, Kubeconfig: kubeconfig}
	if !managed {
		return c, nil
	}

	kcm, err := e.run(name+"/kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"), []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--cluster-name=" + name,
		"--service-account-private-key-file=" + keys.saKeyFile(),
		"--root-ca-file=" + keys.caFile(),
		"--cluster-signing-cert-file=" + keys.caFile(),
		"--cluster-signing-key-file=" + keys.caKeyFile(),
		"--use-service-account-credentials=true",
	}, tierController)
	if err != nil {
		return nil, err
	}
	sched, err := e.run(name+"/kube-scheduler", filepath.Join(binDir, "kube-scheduler"), []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	}, tierController)
	if err != nil {
		return nil, err
	}
	stages := filepath.Join(dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o644); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	kwok, err := e.run(name+"/kwok", filepath.Join(binDir, "kwok"), []string{
		"--kubeconfig=" + kubeconfig,
		"--config=" + stages,
		"--manage-all-nodes=true",
		"--cidr=10.244.0.0/16",
		"--node-ip=10.96.0.1",
		"--server-address=",
		// The stage file renews node status only every 10-20 minutes and
		// leaves liveness to the node's Lease, as a kubelet does: without a
		// lease kube-controller-manager marks the node NotReady after its
		// 50 s --node-monitor-grace-period and every pod on it unready. 40 s
		// is the kubelet's and kwokctl's default; kwok renews at a quarter
		// of it (10 s), five renewals inside one grace period.
		"--node-lease-duration-seconds=" + strconv.Itoa(nodeLeaseSeconds),
	}, tierController)
	if err != nil {
		return nil, err
	}

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("testbed: %s client: %w", name, err)
	}
	node := fakeNode(name + "-node")
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("testbed: create node %s in %s: %w", node.Name, name, err)
	}
	if err := waitFor(ctx, kwok, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	}); err != nil {
		return nil, kwok.Failure(fmt.Errorf("node %s not Ready: %w", node.Name, err))
	}
	// Liveness is the Lease's: a test bed whose node has none would turn
	// NotReady a grace period from now, so it does not count as started.
	if err := waitFor(ctx, kwok, func(ctx context.Context) (bool, error) {
		_, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}); err != nil {
		return nil, kwok.Failure(fmt.Errorf("node %s has no Lease in %s: %w", node.Name, corev1.NamespaceNodeLease, err))
	}
	// Pods are admitted only once the controller manager made the namespace's
	// default ServiceAccount: wait for it so callers can deploy at once.
	if err := waitFor(ctx, kcm, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}); err != nil {
		return nil, kcm.Failure(fmt.Errorf("no default ServiceAccount: %w", err))
	}
	if sched.Exited() {
		return nil, sched.Failure(proc.ErrExited)
	}
	return c, nil
}

// run starts a process and records it so Stop ends it.
func (e *Env) run(name, bin string, args []string, tier int) (*proc.Process, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, fmt.Errorf("testbed: start %s: test bed is stopped", name)
	}
	p, err := proc.Start(name, bin, args, nil, filepath.Join(e.Dir, "logs", strings.ReplaceAll(name, "/", "-")+".log"))
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	e.procs = append(e.procs, &tracked{Process: p, tier: tier})
	return p, nil
}

// Stop ends every process in reverse dependency order (controllers, API
// servers, etcd), each with SIGTERM and then SIGKILL after a short grace, and
// waits for all of them. It removes Dir if Start created it. Stop is safe to
// call more than once.
func (e *Env) Stop() error {
	e.mu.Lock()
	e.stopped = true
	procs := slices.Clone(e.procs)
	e.mu.Unlock()

	for tier := tierController; tier >= tierEtcd; tier-- {
		var wg sync.WaitGroup
		for _, p := range procs {
			if p.tier == tier {
				wg.Go(func() { p.Stop(5 * time.Second) })
			}
		}
		wg.Wait()
	}
	if e.removeDir {
		if err := os.RemoveAll(e.Dir); err != nil {
			return fmt.Errorf("testbed: remove %s: %w", e.Dir, err)
		}
	}
	return nil
}

func fakeNode(name string) *corev1.Node {
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res},
	}
}

func writeKubeconfig(path, name, url string, keys *pki) (*rest.Config, error) {
	cert, err := os.ReadFile(keys.adminCertFile())
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(keys.adminKeyFile())
	if err != nil {
		return nil, err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: keys.caCert}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return nil, fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*kc, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg, nil
}

// waitHTTP polls url until it answers 200, the process exits, or ctx ends.
func waitHTTP(ctx context.Context, p *proc.Process, client *http.Client, url string) error {
	return waitFor(ctx, p, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return true, nil
	})
}

// waitFor polls check every 100ms until it reports done, the process exits,
// or ctx ends; the error then carries check's last error.
func waitFor(ctx context.Context, p *proc.Process, check func(context.Context) (bool, error)) error {
	var last error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		last = err
		if p.Exited() {
			return proc.ErrExited
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-p.Done():
			return proc.ErrExited
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FreePorts returns n distinct loopback ports free at the time of asking.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// resolveBinDir finds the binaries and checks that each is there.
func resolveBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("FLOTILLA_TESTBED_BIN")
	}
	if dir == "" {
		root, err := ModuleRoot()
		if err != nil {
			return "", fmt.Errorf("testbed: binaries: %w (set FLOTILLA_TESTBED_BIN or Options.BinDir)", err)
		}
		dir = filepath.Join(root, "bin", "testbed")
	}
	var missing []string
	for _, b := range Binaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("testbed: %s missing in %s: run `make testbed`", strings.Join(missing, ", "), dir)
	}
	return dir, nil
}

// ModuleRoot returns the Flotilla module's directory, found by walking up
// from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/flotilla-dev/flotilla\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no github.com/flotilla-dev/flotilla go.mod above the working directory")
		}
		dir = parent
	}
}
