package grant

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

func scope(name string, namespaces, targets []string, kinds ...grantv1alpha1.GroupKind) grantv1alpha1.ScopeGrant {
	return grantv1alpha1.ScopeGrant{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: grantv1alpha1.ScopeGrantSpec{Namespaces: namespaces, TargetNamespaces: targets, ClusterScopedKinds: kinds}}
}

// reason is "" for allowed, else the refusal's reason.
func reason(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	p, ok := problem.As(err)
	if !ok {
		t.Fatalf("refusal %v is not a problem", err)
	}
	return p.Reason
}

func TestTargetNamespace(t *testing.T) {
	grants := Grants{Scopes: []grantv1alpha1.ScopeGrant{
		scope("team-a-monitoring", []string{"team-a"}, []string{"monitoring"}),
		scope("platform-anywhere", []string{"platform"}, []string{grantv1alpha1.Any}),
		scope("everyone-shared", []string{grantv1alpha1.Any}, []string{"shared"}),
	}}
	tests := []struct {
		name, ns, target, want string
	}{
		{"its own namespace", "demo", "demo", ""},
		{"no override", "demo", "", ""},
		{"another namespace", "demo", "kube-system", ReasonNamespaceNotGranted},
		{"granted to its namespace", "team-a", "monitoring", ""},
		{"granted to another namespace only", "team-b", "monitoring", ReasonNamespaceNotGranted},
		{"granted anywhere", "platform", "kube-system", ""},
		{"granted to every namespace", "team-b", "shared", ""},
		{"the agent's own namespace, even granted anywhere", "platform", AgentNamespace, ReasonReservedNamespace},
		{"the agent's own namespace as its own name", AgentNamespace, AgentNamespace, ReasonReservedNamespace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := grants.TargetNamespace(tt.ns, tt.target)
			if got := reason(t, err); got != tt.want {
				t.Fatalf("TargetNamespace(%q, %q) = %v, want %q", tt.ns, tt.target, err, tt.want)
			}
			if tt.want == ReasonNamespaceNotGranted && (!strings.Contains(err.Error(), tt.target) || !strings.Contains(err.Error(), "ScopeGrant")) {
				t.Errorf("refusal %q does not name the namespace and the grant it needs", err)
			}
		})
	}
	if err := (Grants{}).TargetNamespace("demo", "kube-system"); reason(t, err) != ReasonNamespaceNotGranted {
		t.Errorf("with no grants at all: %v", err)
	}
}

func TestClusterScopedKind(t *testing.T) {
	grants := Grants{Scopes: []grantv1alpha1.ScopeGrant{
		scope("team-a-namespaces", []string{"team-a"}, nil, grantv1alpha1.GroupKind{Kind: "Namespace"}),
		scope("platform-rbac", []string{"platform"}, nil, grantv1alpha1.GroupKind{Group: "rbac.authorization.k8s.io", Kind: grantv1alpha1.Any}),
	}}
	tests := []struct {
		name string
		ns   string
		gk   schema.GroupKind
		want string
	}{
		{"not granted", "demo", schema.GroupKind{Kind: "Namespace"}, ReasonKindNotGranted},
		{"granted", "team-a", schema.GroupKind{Kind: "Namespace"}, ""},
		{"another kind", "team-a", schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}, ReasonKindNotGranted},
		{"every kind of a group", "platform", schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}, ""},
		{"same kind name, other group", "team-a", schema.GroupKind{Group: "example.com", Kind: "Namespace"}, ReasonKindNotGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := grants.ClusterScopedKind(tt.ns, tt.gk)
			if got := reason(t, err); got != tt.want {
				t.Fatalf("ClusterScopedKind(%q, %v) = %v, want %q", tt.ns, tt.gk, err, tt.want)
			}
			if err != nil && !strings.Contains(err.Error(), tt.gk.Kind) {
				t.Errorf("refusal %q does not name the kind", err)
			}
		})
	}
}

func TestCluster(t *testing.T) {
	set := func(name string, sel *clusterv1beta2.ManagedClusterSelector) clusterv1beta2.ManagedClusterSet {
		s := clusterv1beta2.ManagedClusterSet{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if sel != nil {
			s.Spec.ClusterSelector = *sel
		}
		return s
	}
	bind := func(ns, name, set string) clusterv1beta2.ManagedClusterSetBinding {
		return clusterv1beta2.ManagedClusterSetBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: clusterv1beta2.ManagedClusterSetBindingSpec{ClusterSet: set}}
	}
	grants := Grants{
		Sets: []clusterv1beta2.ManagedClusterSet{
			set("prod", nil),
			set("eu", &clusterv1beta2.ManagedClusterSelector{SelectorType: clusterv1beta2.LabelSelector,
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"region": "eu"}}}),
		},
		Bindings: []clusterv1beta2.ManagedClusterSetBinding{
			bind("payments", "prod", "prod"),
			bind("analytics", "eu", "eu"),
			bind("sneaky", "other-name", "prod"), // not named as its set: not bound
		},
	}
	inProd := map[string]string{clusterv1beta2.LabelClusterSet: "prod"}
	tests := []struct {
		name, ns string
		labels   map[string]string
		want     string
	}{
		{"a cluster in no set is open", "demo", map[string]string{"env": "test"}, ""},
		{"a set's cluster, namespace not bound", "demo", inProd, ReasonClusterNotBound},
		{"a set's cluster, namespace bound", "payments", inProd, ""},
		{"a binding not named as its set binds nothing", "sneaky", inProd, ReasonClusterNotBound},
		{"selected by a label-selector set", "demo", map[string]string{"region": "eu"}, ReasonClusterNotBound},
		{"bound to the label-selector set", "analytics", map[string]string{"region": "eu"}, ""},
		{"in two sets, bound to one", "payments", map[string]string{clusterv1beta2.LabelClusterSet: "prod", "region": "eu"}, ""},
		{"labelled for a set that does not exist", "demo", map[string]string{clusterv1beta2.LabelClusterSet: "ghost"}, ReasonClusterNotBound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := grants.Cluster(tt.ns, "c1", tt.labels)
			if got := reason(t, err); got != tt.want {
				t.Fatalf("Cluster(%q, %v) = %v, want %q", tt.ns, tt.labels, err, tt.want)
			}
		})
	}
	if err := (Grants{}).Cluster("demo", "c1", inProd); reason(t, err) != ReasonClusterNotBound {
		t.Errorf("a cluster labelled into a set, no sets or bindings defined: %v", err)
	}
}
