// Package grant owns what an Application may reach in the managed
// clusters, judged purely from what hub admins granted. By default an
// Application deploys only namespaced objects, only into the managed
// clusters' namespace of its own hub namespace's name, on any accepted
// cluster that is in no cluster set. More takes a grant: a ScopeGrant for
// another target namespace or a cluster-scoped kind; a
// ManagedClusterSetBinding in the Application's namespace for the clusters
// of a ManagedClusterSet. The agent's own namespace is never reachable.
package grant

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// AgentNamespace is where a cluster's agent runs and keeps its inventories:
// no Application may write there, grant or not.
const AgentNamespace = "flotilla-system"

// Reasons of the refusals.
const (
	ReasonNamespaceNotGranted = "NamespaceNotGranted"
	ReasonKindNotGranted      = "KindNotGranted"
	ReasonClusterNotBound     = "ClusterNotBound"
	ReasonReservedNamespace   = "ReservedNamespace"
)

// Grants are what hub admins granted: the ScopeGrants, and the cluster sets
// with the namespaces bound to each.
type Grants struct {
	Scopes []grantv1alpha1.ScopeGrant
	Sets   []clusterv1beta2.ManagedClusterSet
	// Bindings are the ManagedClusterSetBindings of every namespace.
	Bindings []clusterv1beta2.ManagedClusterSetBinding
}

// FromObjects decodes the grants from the hub's objects as a dynamic
// client or an informer's lister returns them: ScopeGrants, then
// ManagedClusterSets, then ManagedClusterSetBindings.
func FromObjects(scopes, sets, bindings []runtime.Object) (Grants, error) {
	var g Grants
	if err := decodeAll(scopes, &g.Scopes); err != nil {
		return g, err
	}
	if err := decodeAll(sets, &g.Sets); err != nil {
		return g, err
	}
	return g, decodeAll(bindings, &g.Bindings)
}

func decodeAll[T any](objs []runtime.Object, into *[]T) error {
	for _, obj := range objs {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return fmt.Errorf("grants: unexpected %T", obj)
		}
		var v T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
			return fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		*into = append(*into, v)
	}
	return nil
}

// TargetNamespace says whether Applications of hub namespace ns may deploy
// into target in the managed clusters.
func (g Grants) TargetNamespace(ns, target string) error {
	switch {
	case target == AgentNamespace:
		return problem.New(ReasonReservedNamespace, "namespace %q is the cluster agent's own: no Application deploys there", target)
	case target == "" || target == ns:
		return nil
	}
	for _, s := range g.Scopes {
		if matches(s.Spec.Namespaces, ns) && matches(s.Spec.TargetNamespaces, target) {
			return nil
		}
	}
	return problem.New(ReasonNamespaceNotGranted,
		"Applications of namespace %q deploy only into namespace %q of the managed clusters: deploying into %q needs a ScopeGrant with namespaces [%s] and targetNamespaces [%s] (a hub admin grants it)",
		ns, ns, target, ns, target)
}

// ClusterScopedKind says whether Applications of hub namespace ns may
// deploy objects of the cluster-scoped kind gk.
func (g Grants) ClusterScopedKind(ns string, gk schema.GroupKind) error {
	for _, s := range g.Scopes {
		if !matches(s.Spec.Namespaces, ns) {
			continue
		}
		for _, k := range s.Spec.ClusterScopedKinds {
			if k.Group == gk.Group && (k.Kind == gk.Kind || k.Kind == grantv1alpha1.Any) {
				return nil
			}
		}
	}
	group := gk.Group
	if group == "" {
		group = `""`
	}
	return problem.New(ReasonKindNotGranted,
		"%s is cluster-scoped: Applications of namespace %q deploy it only with a ScopeGrant with namespaces [%s] and clusterScopedKinds [{group: %s, kind: %s}] (a hub admin grants it)",
		kindName(gk), ns, ns, group, gk.Kind)
}

// Cluster says whether Applications of hub namespace ns may deploy to the
// cluster with these name and labels: a cluster in no set is open to every
// namespace; one in sets only to the namespaces bound to one of them.
func (g Grants) Cluster(ns, cluster string, clusterLabels map[string]string) error {
	in := g.setsOf(clusterLabels)
	if len(in) == 0 {
		return nil
	}
	for _, b := range g.Bindings {
		// Open Cluster Management requires a binding to be named as its set.
		if b.Namespace == ns && b.Name == b.Spec.ClusterSet && slices.Contains(in, b.Spec.ClusterSet) {
			return nil
		}
	}
	return problem.New(ReasonClusterNotBound,
		"cluster %q is in ManagedClusterSet %s, which namespace %q is not bound to: a hub admin binds it with a ManagedClusterSetBinding named %s in %s",
		cluster, strings.Join(in, ", "), ns, in[0], ns)
}

// setsOf lists the sets a cluster with these labels is in.
func (g Grants) setsOf(clusterLabels map[string]string) []string {
	var in []string
	for _, s := range g.Sets {
		switch s.Spec.ClusterSelector.SelectorType {
		case clusterv1beta2.LabelSelector:
			sel, err := metav1.LabelSelectorAsSelector(s.Spec.ClusterSelector.LabelSelector)
			// A selector that does not parse selects every cluster: the
			// set then closes them all rather than opening any.
			if err != nil || s.Spec.ClusterSelector.LabelSelector == nil || sel.Matches(labels.Set(clusterLabels)) {
				in = append(in, s.Name)
			}
		default:
			if clusterLabels[clusterv1beta2.LabelClusterSet] == s.Name {
				in = append(in, s.Name)
			}
		}
	}
	// A cluster labelled for a set that does not exist is closed too.
	if name := clusterLabels[clusterv1beta2.LabelClusterSet]; name != "" && !slices.Contains(in, name) {
		in = append(in, name)
	}
	slices.Sort(in)
	return slices.Compact(in)
}

func matches(list []string, name string) bool {
	return slices.Contains(list, name) || slices.Contains(list, grantv1alpha1.Any)
}

func kindName(gk schema.GroupKind) string {
	if gk.Group == "" {
		return gk.Kind
	}
	return fmt.Sprintf("%s.%s", gk.Kind, gk.Group)
}
