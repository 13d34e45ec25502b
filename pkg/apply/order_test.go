package apply

import (
	"fmt"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestRankPutsWhatOthersDependOnFirst(t *testing.T) {
	// Each group applies after every group above it.
	groups := [][]string{
		{"Namespace"},
		{"CustomResourceDefinition"},
		{"ServiceAccount"},
		{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"},
		{"ConfigMap", "Secret"},
		{"PersistentVolumeClaim"},
		{"Service"},
		{"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"},
		{"Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"},
		{"Widget", "Certificate", ""}, // kinds the table does not know
	}
	for i, g := range groups {
		for _, kind := range g {
			if got := rank(kind); got != rank(g[0]) {
				t.Errorf("rank(%q) = %d, want %d as %s", kind, got, rank(g[0]), g[0])
			}
			if i > 0 && rank(kind) <= rank(groups[i-1][0]) {
				t.Errorf("rank(%q) = %d, not after %s (%d)", kind, rank(kind), groups[i-1][0], rank(groups[i-1][0]))
			}
		}
	}
	if rank("Widget") != rankOther {
		t.Errorf("an unknown kind ranks %d, want rankOther %d", rank("Widget"), rankOther)
	}
}

func obj(kind, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetKind(kind)
	u.SetName(name)
	return u
}

func names(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func TestSort(t *testing.T) {
	tests := []struct {
		name string
		in   []*unstructured.Unstructured
		want []string
	}{
		{"empty", nil, nil},
		{
			"dependency order",
			[]*unstructured.Unstructured{obj("Widget", "w"), obj("Ingress", "web"), obj("Deployment", "web"), obj("Service", "web"),
				obj("ConfigMap", "settings"), obj("RoleBinding", "rb"), obj("ServiceAccount", "sa"), obj("CustomResourceDefinition", "widgets"), obj("Namespace", "ns")},
			[]string{"Namespace/ns", "CustomResourceDefinition/widgets", "ServiceAccount/sa", "RoleBinding/rb", "ConfigMap/settings",
				"Service/web", "Deployment/web", "Ingress/web", "Widget/w"},
		},
		{
			"stable among equal ranks",
			[]*unstructured.Unstructured{obj("Secret", "b"), obj("Widget", "z"), obj("ConfigMap", "c"), obj("Gadget", "a"), obj("Secret", "a")},
			[]string{"Secret/b", "ConfigMap/c", "Secret/a", "Widget/z", "Gadget/a"},
		},
	}
	// Enough objects that an unstable sort would show (short inputs sort
	// stably whatever the algorithm).
	var many []*unstructured.Unstructured
	var config, workloads, others []string
	for i := range 48 {
		kind := []string{"Deployment", "ConfigMap", "Widget", "Secret"}[i%4]
		name := fmt.Sprintf("o%02d", i)
		many = append(many, obj(kind, name))
		switch kind {
		case "ConfigMap", "Secret":
			config = append(config, kind+"/"+name)
		case "Deployment":
			workloads = append(workloads, kind+"/"+name)
		default:
			others = append(others, kind+"/"+name)
		}
	}
	tests = append(tests, struct {
		name string
		in   []*unstructured.Unstructured
		want []string
	}{"stable with many objects", many, slices.Concat(config, workloads, others)})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Sort(tt.in)
			if got := names(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("Sort() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDeletionOrderIsTheReverseOfApplying(t *testing.T) {
	refs := []Ref{
		{Kind: "Namespace", Name: "ns"}, {Kind: "ConfigMap", Name: "a"}, {Kind: "Deployment", Name: "web"},
		{Kind: "Secret", Name: "b"}, {Kind: "Widget", Name: "w"}, {Kind: "Service", Name: "web"},
	}
	in := slices.Clone(refs)
	var got []string
	for _, r := range deletionOrder(refs) {
		got = append(got, r.Kind+"/"+r.Name)
	}
	want := []string{"Widget/w", "Deployment/web", "Service/web", "ConfigMap/a", "Secret/b", "Namespace/ns"}
	if !slices.Equal(got, want) {
		t.Errorf("deletionOrder() = %v, want %v", got, want)
	}
	if !slices.Equal(refs, in) {
		t.Errorf("deletionOrder changed its argument: %v", refs)
	}
}
