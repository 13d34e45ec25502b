package dispatcher

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// Cluster is what placement knows of a ManagedCluster.
type Cluster struct {
	Name     string
	Accepted bool
	Labels   map[string]string
}

// Topology is a topology policy's properties, as KubeVela writes them.
type Topology struct {
	Clusters []string `json:"clusters,omitempty"`
	// ClusterLabelSelector matches ManagedCluster labels (clusterSelector is an alias).
	ClusterLabelSelector map[string]string `json:"clusterLabelSelector,omitempty"`
	ClusterSelector      map[string]string `json:"clusterSelector,omitempty"`
	// AllowEmpty lets a selector match no cluster without failing the step.
	AllowEmpty bool `json:"allowEmpty,omitempty"`
	// Namespace, when set, is where the objects go in the clusters.
	Namespace string `json:"namespace,omitempty"`
}

// Reasons a step goes to no cluster (problems Place reports).
const (
	ReasonClusterNotFound    = "ClusterNotFound"
	ReasonClusterNotAccepted = "ClusterNotAccepted"
	ReasonNoClusterMatched   = "NoClusterMatched"
	ReasonInvalidTopology    = "InvalidTopology"
)

// Placement is where one deploy step goes.
type Placement struct {
	Clusters []string
	// Namespace overrides the objects' namespace when a policy sets one.
	Namespace string
}

// Place resolves a deploy step's topology policies against the known
// clusters. Every named cluster must exist and be accepted; a selector must
// match at least one accepted cluster unless allowEmpty.
func Place(policies []events.Policy, clusters []Cluster) (Placement, error) {
	byName := map[string]Cluster{}
	for _, c := range clusters {
		byName[c.Name] = c
	}
	var out Placement
	for _, p := range policies {
		var t Topology
		if len(p.Properties) > 0 {
			if err := json.Unmarshal(p.Properties, &t); err != nil {
				return Placement{}, problem.New(ReasonInvalidTopology, "policy %q: properties: %v", p.Name, err)
			}
		}
		if t.Namespace != "" {
			out.Namespace = t.Namespace
		}
		sel := t.ClusterLabelSelector
		if sel == nil {
			sel = t.ClusterSelector
		}
		if len(t.Clusters) == 0 && sel == nil {
			return Placement{}, problem.New(ReasonInvalidTopology, "policy %q names no clusters and no clusterLabelSelector", p.Name)
		}
		for _, name := range t.Clusters {
			c, ok := byName[name]
			if !ok {
				return Placement{}, problem.New(ReasonClusterNotFound, "policy %q names cluster %q, which is not a ManagedCluster of the hub (kubectl get managedclusters)", p.Name, name)
			}
			if !c.Accepted {
				return Placement{}, problem.New(ReasonClusterNotAccepted, "policy %q names cluster %q, which the hub has not accepted (kubectl flotilla cluster accept %s)", p.Name, name, name)
			}
			out.Clusters = append(out.Clusters, name)
		}
		if sel != nil {
			ls, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sel})
			if err != nil {
				return Placement{}, problem.New(ReasonInvalidTopology, "policy %q: clusterLabelSelector: %v", p.Name, err)
			}
			matched := 0
			for _, c := range clusters {
				if c.Accepted && ls.Matches(labels.Set(c.Labels)) {
					out.Clusters = append(out.Clusters, c.Name)
					matched++
				}
			}
			if matched == 0 && !t.AllowEmpty {
				return Placement{}, problem.New(ReasonNoClusterMatched, "policy %q: clusterLabelSelector %s matches no accepted cluster (set allowEmpty: true to allow this)", p.Name, describe(sel))
			}
		}
	}
	sort.Strings(out.Clusters)
	out.Clusters = slices.Compact(out.Clusters)
	return out, nil
}

func describe(sel map[string]string) string {
	if len(sel) == 0 {
		return "{}"
	}
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
