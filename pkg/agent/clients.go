package agent

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Clients are the agent's clients of its own cluster.
type Clients struct {
	Dynamic dynamic.Interface
	Kube    kubernetes.Interface
	// Mapper resolves kinds to resources; package apply resets it when a
	// kind is missing, so that one the cluster serves only since the last
	// look is found.
	Mapper meta.ResettableRESTMapper
}

// NewClients builds the clients of the cluster at cfg: what a service's
// main hands to New.
func NewClients(cfg *rest.Config) (Clients, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("agent: cluster client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("agent: cluster client: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return Clients{}, fmt.Errorf("agent: cluster discovery: %w", err)
	}
	return Clients{Dynamic: dyn, Kube: cs, Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))}, nil
}

func (c Clients) validate() error {
	if c.Dynamic == nil || c.Kube == nil || c.Mapper == nil {
		return errors.New("agent: the dynamic client, the Kubernetes client and the RESTMapper of the cluster are all required")
	}
	return nil
}
