// Package hub owns how Flotilla's services reach the hub Kubernetes API: the
// client options every hub service binds, and the hub's resources.
package hub

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
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
