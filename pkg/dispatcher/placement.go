package dispatcher

import (
	"cmp"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/grant"
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

// Place resolves a deploy step's topology policies, for an Application of
// hub namespace ns, against the known clusters and what ns is granted.
// Every named cluster must exist, be accepted and be granted; a selector
// chooses only among accepted clusters ns is granted, and must choose at
// least one unless allowEmpty. The planner checked the grants when it cut
// the release; checked again here, a cluster labelled into a set since, or
// a binding removed, is not deployed to.
func Place(ns string, policies []events.Policy, clusters []Cluster, g grant.Grants) (Placement, error) {
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
			if err := g.TargetNamespace(ns, t.Namespace); err != nil {
				return Placement{}, within(p.Name, err)
			}
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
			if err := g.Cluster(ns, name, c.Labels); err != nil {
				return Placement{}, within(p.Name, err)
			}
			out.Clusters = append(out.Clusters, name)
		}
		if sel != nil {
			ls, err := metav1.LabelSelectorAsSelector(&metav1.LabelSelector{MatchLabels: sel})
			if err != nil {
				return Placement{}, problem.New(ReasonInvalidTopology, "policy %q: clusterLabelSelector: %v", p.Name, err)
			}
			matched := 0
			var notGranted error
			for _, c := range clusters {
				if !c.Accepted || !ls.Matches(labels.Set(c.Labels)) {
					continue
				}
				if err := g.Cluster(ns, c.Name, c.Labels); err != nil {
					notGranted = cmp.Or(notGranted, err)
					continue
				}
				out.Clusters = append(out.Clusters, c.Name)
				matched++
			}
			switch {
			case matched > 0 || t.AllowEmpty:
			case notGranted != nil:
				return Placement{}, within(p.Name, notGranted, "clusterLabelSelector "+describe(sel)+" matches only clusters namespace "+strconv.Quote(ns)+" may not deploy to")
			default:
				return Placement{}, problem.New(ReasonNoClusterMatched, "policy %q: clusterLabelSelector %s matches no accepted cluster (set allowEmpty: true to allow this)", p.Name, describe(sel))
			}
		}
	}
	sort.Strings(out.Clusters)
	out.Clusters = slices.Compact(out.Clusters)
	return out, nil
}

// within says which policy a grant's refusal is about (and what it found).
func within(policy string, err error, found ...string) error {
	p, ok := problem.As(err)
	if !ok {
		return err
	}
	msg := p.Message
	if len(found) > 0 {
		msg = strings.Join(found, "; ") + ": " + msg
	}
	return problem.New(p.Reason, "policy %q: %s", policy, msg)
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
