// Package hub owns how Flotilla's services reach the hub Kubernetes API: the
// client options every hub service binds, and the hub's resources.
package hub

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say how to reach a Kubernetes API server: the hub for the hub
// services, the agent's own cluster for the agent.
type Options struct {
	// Target names the API server in flag help ("the hub API server").
	Target string
	// Kubeconfig of the hub; empty: $KUBECONFIG, then in-cluster.
	Kubeconfig string
	QPS        float32
	Burst      int
}

// BindFlags binds --kubeconfig, --kube-api-qps and --kube-api-burst.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	target := o.Target
	if target == "" {
		target = "the hub API server"
	}
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig of "+target+" (default $KUBECONFIG, then in-cluster)")
	fs.Float32Var(&o.QPS, "kube-api-qps", 50, "queries per second to "+target)
	fs.IntVar(&o.Burst, "kube-api-burst", 100, "burst of queries to "+target)
}

// RESTConfig loads the client configuration.
func (o *Options) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("hub client config: %w", err)
	}
	if o.QPS > 0 {
		cfg.QPS, cfg.Burst = o.QPS, o.Burst
	}
	return cfg, nil
}

// Clients are the clients a service reads and writes an API server with,
// built once from a configuration by the service's main; services take them,
// so their pure parts are tested without servers.
type Clients struct {
	Dynamic  dynamic.Interface
	Kube     kubernetes.Interface
	Metadata metadata.Interface
	// Mapper resolves kinds to resources through the server's discovery,
	// refreshed on Reset (a CRD installed since the last look).
	Mapper meta.ResettableRESTMapper
	// As is a dynamic client acting as another user (impersonation, which
	// the server authorizes): nil when the clients were not made from a
	// configuration.
	As func(user string) (dynamic.Interface, error)
}

// NewClients builds the clients for the API server cfg reaches.
func NewClients(cfg *rest.Config) (*Clients, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client for %s: %w", cfg.Host, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("metadata client for %s: %w", cfg.Host, err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client for %s: %w", cfg.Host, err)
	}
	as := func(user string) (dynamic.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.Impersonate = rest.ImpersonationConfig{UserName: user}
		return dynamic.NewForConfig(c)
	}
	return &Clients{Dynamic: dyn, Kube: cs, Metadata: md, Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)), As: as}, nil
}
