package dispatcher

import (
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/grant"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// create makes a hub object of res from obj, removed when the test ends.
func (f *fixture) create(res schema.GroupVersionResource, obj map[string]any) {
	f.t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	ri := f.hub.Resource(res).Namespace(u.GetNamespace())
	if _, err := ri.Create(f.ctx, u, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("create %s %s: %v", res.Resource, u.GetName(), err)
	}
	f.t.Cleanup(func() {
		if err := ri.Delete(f.ctx, u.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			f.t.Errorf("delete %s %s: %v", res.Resource, u.GetName(), err)
		}
	})
}

// label adds labels to a ManagedCluster on the hub.
func (f *fixture) label(cluster string, labels map[string]string) {
	f.t.Helper()
	patch, _ := (&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"labels": labels}}}).MarshalJSON()
	if _, err := f.hub.Resource(clusterv1.ManagedClusterResource).Patch(f.ctx, cluster, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// An Application whose topology chooses clusters by label reaches only the
// clusters its namespace is granted: a cluster in a ManagedClusterSet its
// namespace is not bound to gets no work (it did, before the dispatcher
// checked), a selector matching only such clusters is refused, saying why,
// and a binding opens the set. A target namespace takes a ScopeGrant.
func TestPlacementStaysWithinGrants(t *testing.T) {
	f := start(t, Options{AutoAccept: true}, natstest.Options{})
	f.join("pg-open")
	f.join("pg-vault")
	f.create(clusterv1beta2.ManagedClusterSetResource, map[string]any{
		"apiVersion": clusterv1beta2.GroupVersion.String(), "kind": "ManagedClusterSet", "metadata": map[string]any{"name": "pg-vault"}})
	f.label("pg-open", map[string]string{"suite": "pg"})
	f.label("pg-vault", map[string]string{"suite": "pg", "tier": "vault", clusterv1beta2.LabelClusterSet: "pg-vault"})
	snap := inline(t, configMap("settings", "v"))

	ref := f.deploy("pg-team", "web", 1, snap, topology(`{"clusterLabelSelector":{"suite":"pg"}}`))
	if d := f.dispatched(ref); !slices.Equal(d.Clusters, []string{"pg-open"}) || d.Reason != "" {
		t.Fatalf("dispatched %+v, want to pg-open only", d)
	}
	work, err := f.js.Stream(f.ctx, bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := work.GetLastMsgForSubject(f.ctx, bus.WorkSubject("pg-vault", "pg-team", "web")); err == nil {
		t.Fatal("pg-vault, in a set pg-team is not bound to, got work")
	}

	ref = f.deploy("pg-team", "db", 1, snap, topology(`{"clusterLabelSelector":{"tier":"vault"}}`))
	if d := f.dispatched(ref); d.Reason != grant.ReasonClusterNotBound || len(d.Clusters) != 0 ||
		!strings.Contains(d.Error, `matches only clusters namespace "pg-team" may not deploy to: cluster "pg-vault" is in ManagedClusterSet pg-vault`) {
		t.Fatalf("dispatched %+v, want refused %s naming pg-vault's set", d, grant.ReasonClusterNotBound)
	}
	ref = f.deploy("pg-team", "db-named", 1, snap, topology(`{"clusters":["pg-vault"]}`))
	if d := f.dispatched(ref); d.Reason != grant.ReasonClusterNotBound {
		t.Fatalf("dispatched %+v by name, want refused %s", d, grant.ReasonClusterNotBound)
	}
	ref = f.deploy("pg-team", "api", 1, snap, topology(`{"clusters":["pg-open"],"namespace":"kube-system"}`))
	if d := f.dispatched(ref); d.Reason != grant.ReasonNamespaceNotGranted {
		t.Fatalf("dispatched %+v into kube-system, want refused %s", d, grant.ReasonNamespaceNotGranted)
	}

	// Bound, the set is open to the namespace (at once: a refusal reads the hub).
	f.create(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "pg-team"}})
	f.create(clusterv1beta2.ManagedClusterSetBindingResource, map[string]any{
		"apiVersion": clusterv1beta2.GroupVersion.String(), "kind": "ManagedClusterSetBinding",
		"metadata": map[string]any{"name": "pg-vault", "namespace": "pg-team"}, "spec": map[string]any{"clusterSet": "pg-vault"}})
	ref = f.deploy("pg-team", "db-bound", 1, snap, topology(`{"clusterLabelSelector":{"tier":"vault"}}`))
	if d := f.dispatched(ref); !slices.Equal(d.Clusters, []string{"pg-vault"}) || d.Reason != "" {
		t.Fatalf("dispatched %+v once bound, want to pg-vault", d)
	}
	f.create(grantv1alpha1.ScopeGrantResource, map[string]any{
		"apiVersion": grantv1alpha1.GroupVersion.String(), "kind": "ScopeGrant", "metadata": map[string]any{"name": "pg-team-ops"},
		"spec": map[string]any{"namespaces": []any{"pg-team"}, "targetNamespaces": []any{"ops"}}})
	ref = f.deploy("pg-team", "api-granted", 1, snap, topology(`{"clusters":["pg-open"],"namespace":"ops"}`))
	if d := f.dispatched(ref); !slices.Equal(d.Clusters, []string{"pg-open"}) || d.Reason != "" {
		t.Fatalf("dispatched %+v into ops once granted, want to pg-open", d)
	}
}
