package planner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

func readyReasonIs(reason string) func(*v1beta1.Application) bool {
	return func(a *v1beta1.Application) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, planner.ConditionReady)
		return c != nil && c.Reason == reason
	}
}

// An Application that reaches beyond its namespace without a grant fails,
// saying what it lacks, and nothing goes out; once a hub admin grants it,
// the release starts (the grants are watched: an hour's resync cannot be
// what starts it).
func TestReachBeyondTheNamespaceNeedsAGrant(t *testing.T) {
	tests := []struct {
		ns     string
		edit   func(manifest, ns string) string
		reason string
		msg    string
		grant  string
	}{
		{"reach-ns", func(m, _ string) string {
			return strings.Replace(m, `clusters: ["<clusterid1>"]`, `clusters: ["<clusterid1>"]`+"\n  namespace: kube-system", 1)
		}, "NamespaceNotGranted", `policy "cluster-test": Applications of namespace "reach-ns" deploy only into namespace "reach-ns"`,
			"apiVersion: grant.flotilla.dev/v1alpha1\nkind: ScopeGrant\nmetadata:\n  name: reach-ns-into-kube-system\nspec:\n  namespaces: [reach-ns]\n  targetNamespaces: [kube-system]\n"},
		{"reach-agent", func(m, _ string) string {
			return strings.Replace(m, `clusters: ["<clusterid1>"]`, `clusters: ["<clusterid1>"]`+"\n  namespace: flotilla-system", 1)
		}, "ReservedNamespace", `namespace "flotilla-system" is the cluster agent's own`, ""},
		{"reach-kind", func(m, ns string) string {
			return strings.Replace(m, "          - apiVersion: apps/v1\n            kind: Deployment\n            name: demo",
				"          - apiVersion: apps/v1\n            kind: Deployment\n            name: demo\n          - apiVersion: rbac.authorization.k8s.io/v1\n            kind: ClusterRole\n            name: reach-kind-reader", 1)
		}, "KindNotGranted", "ClusterRole reach-kind-reader: ClusterRole.rbac.authorization.k8s.io is cluster-scoped",
			"apiVersion: grant.flotilla.dev/v1alpha1\nkind: ScopeGrant\nmetadata:\n  name: reach-kind-cluster-roles\nspec:\n  namespaces: [reach-kind]\n  clusterScopedKinds: [{group: rbac.authorization.k8s.io, kind: ClusterRole}]\n"},
		{"reach-set", func(m, _ string) string {
			return strings.ReplaceAll(m, "<clusterid2>", "reach-set-prod")
		}, "ClusterNotBound", `policy "cluster-prod": cluster "reach-set-prod" is in ManagedClusterSet reach-set-secure`,
			"apiVersion: cluster.open-cluster-management.io/v1beta2\nkind: ManagedClusterSetBinding\nmetadata:\n  name: reach-set-secure\n  namespace: reach-set\nspec:\n  clusterSet: reach-set-secure\n"},
	}
	// What the hub admin made beforehand (cluster-scoped, shared by the subtests).
	hubAdmin := newFixture(t, "reach-admin")
	hubAdmin.kubectl("create", "clusterrole", "reach-kind-reader", "--verb=get", "--resource=configmaps")
	cleanupHub(hubAdmin, "clusterrole", "reach-kind-reader")
	hubAdmin.applyYAML("apiVersion: cluster.open-cluster-management.io/v1beta2\nkind: ManagedClusterSet\nmetadata:\n  name: reach-set-secure\n---\n" +
		"apiVersion: cluster.open-cluster-management.io/v1\nkind: ManagedCluster\nmetadata:\n  name: reach-set-prod\n  labels:\n    cluster.open-cluster-management.io/clusterset: reach-set-secure\nspec:\n  hubAcceptsClient: true\n")
	cleanupHub(hubAdmin, "managedclusterset", "reach-set-secure")
	cleanupHub(hubAdmin, "managedcluster", "reach-set-prod")
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.ns)
			f.startPlannerWith(planner.Options{Resync: time.Hour}, nil)
			f.applyYAML(tt.edit(f.seed(), tt.ns))
			app := f.waitApp("demo", "refused with "+tt.reason, readyReasonIs(tt.reason))
			c := meta.FindStatusCondition(app.Status.Conditions, planner.ConditionReady)
			if app.Status.Phase != v1beta1.PhaseWorkflowFailed || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, tt.msg) {
				t.Errorf("phase %s, Ready %s %s %q; want workflowFailed, False, %s containing %q", app.Status.Phase, c.Status, c.Reason, c.Message, tt.reason, tt.msg)
			}
			if evs := f.stepEvents("demo"); len(evs) != 0 {
				t.Fatalf("published %v for a refused application", summary(evs))
			}
			if tt.grant == "" {
				return
			}
			if !strings.Contains(tt.grant, "namespace: ") {
				cleanupHub(f, "scopegrant", grantName(tt.grant))
			}
			f.applyYAML(tt.grant)
			if got := summary(f.waitStepEvents("demo", 1)); got[0] != "started deploy-test" {
				t.Errorf("after the grant: %v", got)
			}
		})
	}
}

func grantName(manifest string) string {
	_, after, _ := strings.Cut(manifest, "name: ")
	name, _, _ := strings.Cut(after, "\n")
	return name
}

// cleanupHub deletes a cluster-scoped object the test made, when it ends.
func cleanupHub(f *fixture, kind, name string) {
	f.t.Cleanup(func() {
		_, _, _ = env.Kubectl(context.Background(), testbed.HubName, "delete", kind, name, "--ignore-not-found")
	})
}
