package crds_test

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/flotilla-dev/flotilla/deploy/crds"
	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

func TestCRDsDecode(t *testing.T) {
	all, err := crds.All()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range all {
		got[c.Name] = true
	}
	for _, want := range []string{"applications.core.oam.dev", "policies.core.oam.dev", "workflows.core.oam.dev", "managedclusters.cluster.open-cluster-management.io"} {
		if !got[want] {
			t.Errorf("no CRD %s among %v", want, got)
		}
	}
}

// The seed's four files apply unchanged with plain kubectl, nothing is
// pruned, and kubectl prints the seed's columns.
func TestSeedAppliesUnchangedAndPrintsTheSeedColumns(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{Clusters: []string{"c1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := crds.Install(ctx, env.Hub.Config); err != nil {
		t.Fatal(err)
	}
	// Installing twice is harmless (upgrades run it again).
	if err := crds.Install(ctx, env.Hub.Config); err != nil {
		t.Fatalf("second install: %v", err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, stderr, err := env.Kubectl(ctx, testbed.HubName, args...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(stderr, "Warning") {
			t.Errorf("kubectl %v warned: %s", args, stderr)
		}
		return out
	}

	kubectl("create", "namespace", "demo")
	for _, f := range []string{"app-meta.yaml", "policy-topology.yaml", "workflow.yaml", "app.yaml"} {
		kubectl("apply", "-f", filepath.Join("..", "..", "examples", "seed", f))
	}

	dyn, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := dyn.Resource(v1alpha1.PolicyResource).Namespace("demo").Get(ctx, "cluster-prod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if typ, _, _ := unstructured.NestedString(pol.Object, "type"); typ != "topology" {
		t.Errorf("policy type = %q, want topology", typ)
	}
	if clusters, _, _ := unstructured.NestedStringSlice(pol.Object, "properties", "clusters"); len(clusters) != 1 || clusters[0] != "<clusterid2>" {
		t.Errorf("policy properties.clusters = %v, want [<clusterid2>]", clusters)
	}
	wf, err := dyn.Resource(v1alpha1.WorkflowResource).Namespace("demo").Get(ctx, "deploy-demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	steps, _, _ := unstructured.NestedSlice(wf.Object, "steps")
	if len(steps) != 2 {
		t.Fatalf("workflow has %d steps, want 2", len(steps))
	}
	if auto, found, _ := unstructured.NestedBool(steps[1].(map[string]any), "properties", "auto"); !found || auto {
		t.Errorf("deploy-prod properties.auto = %v (found %v), want false", auto, found)
	}
	app, err := dyn.Resource(v1beta1.ApplicationResource).Namespace("demo").Get(ctx, "demo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	comps, _, _ := unstructured.NestedSlice(app.Object, "spec", "components")
	objs, _, _ := unstructured.NestedSlice(comps[0].(map[string]any), "properties", "objects")
	if len(objs) != 1 || objs[0].(map[string]any)["kind"] != "Deployment" || objs[0].(map[string]any)["name"] != "demo" {
		t.Errorf("component objects = %v", objs)
	}

	// The planner's status at the seed's step 9.
	status := map[string]any{
		"status":   "workflowSuspending",
		"services": []any{map[string]any{"name": "demo", "namespace": "demo", "cluster": "c1", "healthy": true}},
	}
	if err := unstructured.SetNestedMap(app.Object, status, "status"); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(v1beta1.ApplicationResource).Namespace("demo").UpdateStatus(ctx, app, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	assertTable(t, kubectl("get", "app", "demo", "-n", "demo"),
		`^NAME   COMPONENT   TYPE          PHASE                HEALTHY   STATUS   AGE$`,
		`^demo   demo        ref-objects   workflowSuspending   true               \d+s$`)

	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cluster.open-cluster-management.io/v1", "kind": "ManagedCluster",
		"metadata": map[string]any{"name": "managedcluster-c5abcz9"},
		"spec":     map[string]any{"hubAcceptsClient": true},
	}}
	mc, err = dyn.Resource(clusterv1.ManagedClusterResource).Create(ctx, mc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now().UTC().Format(time.RFC3339)
	conds := []any{
		map[string]any{"type": clusterv1.ConditionJoined, "status": "True", "reason": "Joined", "message": "joined", "lastTransitionTime": now},
		map[string]any{"type": clusterv1.ConditionAvailable, "status": "True", "reason": "Heartbeat", "message": "heartbeats arrive", "lastTransitionTime": now},
	}
	if err := unstructured.SetNestedSlice(mc.Object, conds, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(clusterv1.ManagedClusterResource).UpdateStatus(ctx, mc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	assertTable(t, kubectl("get", "managedclusters"),
		// As the seed prints them, with an ID as long as the page's.
		`^NAME                     HUB ACCEPTED   MANAGED CLUSTER URLS   JOINED   AVAILABLE   AGE$`,
		`^managedcluster-c5abcz9   true                                  True     True        \d+s$`)
}

func assertTable(t *testing.T, out string, lines ...string) {
	t.Helper()
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(got) != len(lines) {
		t.Fatalf("kubectl printed %d lines, want %d:\n%s", len(got), len(lines), out)
	}
	for i, re := range lines {
		if !regexp.MustCompile(re).MatchString(got[i]) {
			t.Errorf("line %d = %q, want match %s", i, got[i], re)
		}
	}
}
