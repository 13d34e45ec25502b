package release

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/grant"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// memHub is an in-memory Hub for the pure resolution logic.
type memHub struct {
	workflows map[string]*v1alpha1.Workflow
	policies  map[string]*v1alpha1.Policy
	objects   map[string]*unstructured.Unstructured // "Kind/name" or "resource.group/name"
	grants    grant.Grants
	clusters  map[string]map[string]string
}

func (h *memHub) Grants(context.Context) (grant.Grants, error) { return h.grants, nil }
func (h *memHub) ClusterLabels(_ context.Context, name string) (map[string]string, bool, error) {
	l, ok := h.clusters[name]
	return l, ok, nil
}

func (h *memHub) Workflow(_ context.Context, _, name string) (*v1alpha1.Workflow, error) {
	return h.workflows[name], nil
}
func (h *memHub) Policy(_ context.Context, _, name string) (*v1alpha1.Policy, error) {
	return h.policies[name], nil
}
func (h *memHub) Object(_ context.Context, _ string, ref ObjectRef) (*unstructured.Unstructured, error) {
	if ref.Kind != "" {
		return h.objects[ref.Kind+"/"+ref.Name], nil
	}
	return h.objects[ref.GroupResource().String()+"/"+ref.Name], nil
}

func rawx(s string) *runtime.RawExtension { return &runtime.RawExtension{Raw: []byte(s)} }

func seedHub() *memHub {
	dep := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{
			"name": "demo", "namespace": "demo", "uid": "x", "resourceVersion": "7", "generation": int64(2),
			"creationTimestamp": "2026-11-27T10:00:00Z", "labels": map[string]any{"app": "demo"},
			"annotations":     map[string]any{"note": "kept"},
			"managedFields":   []any{map[string]any{"manager": "kubectl"}},
			"ownerReferences": []any{map[string]any{"name": "o"}},
		},
		"spec":   map[string]any{"replicas": int64(1)},
		"status": map[string]any{"readyReplicas": int64(0)},
	}}
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "cfg", "namespace": "demo"}}}
	return &memHub{
		workflows: map[string]*v1alpha1.Workflow{"deploy-demo": {Steps: []v1alpha1.WorkflowStep{
			{WorkflowStepBase: v1alpha1.WorkflowStepBase{Name: "deploy-test", Type: "deploy", Properties: rawx(`{"policies":["cluster-test"]}`)}},
			{WorkflowStepBase: v1alpha1.WorkflowStepBase{Name: "deploy-prod", Type: "deploy", Properties: rawx(`{"auto":false,"policies":["cluster-prod"]}`)}},
		}}},
		policies: map[string]*v1alpha1.Policy{
			"cluster-test": {Type: "topology", Properties: rawx(`{"clusters":["c1"]}`)},
			"cluster-prod": {Type: "topology", Properties: rawx(`{"clusters":["c2"]}`)},
			"override-x":   {Type: "override"},
		},
		objects: map[string]*unstructured.Unstructured{"Deployment/demo": dep, "configmaps/cfg": cm},
	}
}

func seedApp() *v1beta1.Application {
	return &v1beta1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "demo", Generation: 1, Annotations: map[string]string{v1beta1.AnnotationPublishVersion: "version1"}},
		Spec: v1beta1.ApplicationSpec{
			Components: []v1beta1.ApplicationComponent{{Name: "demo", Type: "ref-objects", Properties: rawx(`{"objects":[{"apiVersion":"apps/v1","kind":"Deployment","name":"demo"}]}`)}},
			Workflow:   &v1beta1.AppWorkflow{Ref: "deploy-demo"},
		},
	}
}

func TestResolveSeed(t *testing.T) {
	spec, err := Resolve(context.Background(), seedHub(), seedApp())
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Steps) != 2 || spec.Steps[1].Auto {
		t.Errorf("steps %+v", spec.Steps)
	}
	if len(spec.Policies) != 2 || spec.Policies[0].Name != "cluster-test" || string(spec.Policies[0].Properties) != `{"clusters":["c1"]}` {
		t.Errorf("policies %+v", spec.Policies)
	}
	objs, digest, err := Snapshot(spec.Objects)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(objs[0], &got); err != nil {
		t.Fatal(err)
	}
	meta := got["metadata"].(map[string]any)
	for _, gone := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences"} {
		if _, ok := meta[gone]; ok {
			t.Errorf("snapshot keeps metadata.%s", gone)
		}
	}
	if _, ok := got["status"]; ok {
		t.Error("snapshot keeps status")
	}
	if meta["labels"] == nil || meta["annotations"] == nil || meta["namespace"] != "demo" {
		t.Errorf("snapshot lost labels, annotations or namespace: %v", meta)
	}
	if !strings.HasPrefix(digest, "sha256:") || len(digest) != 71 {
		t.Errorf("digest %q", digest)
	}
	// Same input, same bytes and digest; another input, another digest.
	objs2, digest2, _ := Snapshot(spec.Objects)
	if digest2 != digest || string(objs2[0]) != string(objs[0]) {
		t.Error("snapshot is not deterministic")
	}
	spec.Objects[0].Object["spec"].(map[string]any)["replicas"] = int64(2)
	if _, d3, _ := Snapshot(spec.Objects); d3 == digest {
		t.Error("changed object, same digest")
	}
}

func TestResolveByResourceAndAnyKind(t *testing.T) {
	app := seedApp()
	app.Spec.Components[0].Properties = rawx(`{"objects":[{"resource":"configmaps","name":"cfg"},{"apiVersion":"apps/v1","kind":"Deployment","name":"demo"}]}`)
	spec, err := Resolve(context.Background(), seedHub(), app)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Objects) != 2 || spec.Objects[0].GetKind() != "ConfigMap" {
		t.Errorf("objects %v", spec.Objects)
	}
}

func TestResolveProblems(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(a *v1beta1.Application, h *memHub)
		reason string
		msg    string
	}{
		{"workflow missing", func(a *v1beta1.Application, h *memHub) { a.Spec.Workflow.Ref = "nope" },
			ReasonWorkflowNotFound, `Workflow "nope" referenced by spec.workflow.ref not found in namespace "demo"`},
		{"policy missing", func(a *v1beta1.Application, h *memHub) { delete(h.policies, "cluster-prod") },
			ReasonPolicyNotFound, `policy "cluster-prod" used by step "deploy-prod" not found`},
		{"policy of another type", func(a *v1beta1.Application, h *memHub) { h.policies["cluster-test"].Type = "override" },
			ReasonUnsupportedPolicyType, `policy "cluster-test" used by step "deploy-test" has type "override"`},
		{"component type", func(a *v1beta1.Application, h *memHub) { a.Spec.Components[0].Type = "webservice" },
			ReasonUnsupportedComponentType, `component "demo" has type "webservice"`},
		{"object missing", func(a *v1beta1.Application, h *memHub) { delete(h.objects, "Deployment/demo") },
			ReasonObjectNotFound, `Deployment demo referenced by component "demo" not found in namespace "demo"`},
		{"object in another namespace", func(a *v1beta1.Application, h *memHub) {
			a.Spec.Components[0].Properties = rawx(`{"objects":[{"apiVersion":"v1","kind":"Secret","name":"s","namespace":"kube-system"}]}`)
		}, ReasonInvalidObjectReference, `namespace "kube-system"`},
		{"no objects", func(a *v1beta1.Application, h *memHub) { a.Spec.Components[0].Properties = rawx(`{"objects":[]}`) },
			ReasonInvalidObjectReference, "properties.objects is empty"},
		{"kind without apiVersion", func(a *v1beta1.Application, h *memHub) {
			a.Spec.Components[0].Properties = rawx(`{"objects":[{"kind":"Deployment","name":"demo"}]}`)
		}, ReasonInvalidObjectReference, "has kind but no apiVersion"},
		{"unknown step type", func(a *v1beta1.Application, h *memHub) { h.workflows["deploy-demo"].Steps[0].Type = "notify" },
			"UnknownStepType", `step "deploy-test" has unknown type "notify"`},
		{"duplicate step", func(a *v1beta1.Application, h *memHub) { h.workflows["deploy-demo"].Steps[1].Name = "deploy-test" },
			"DuplicateStepName", `step name "deploy-test" is used twice`},
		{"no workflow, no policy", func(a *v1beta1.Application, h *memHub) { a.Spec.Workflow = nil },
			ReasonNoWorkflow, "no spec.workflow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, hub := seedApp(), seedHub()
			tt.mutate(app, hub)
			_, err := Resolve(context.Background(), hub, app)
			p, ok := problem.As(err)
			if !ok {
				t.Fatalf("Resolve() = %v, want a problem", err)
			}
			if p.Reason != tt.reason || !strings.Contains(p.Message, tt.msg) {
				t.Errorf("problem %s %q, want %s containing %q", p.Reason, p.Message, tt.reason, tt.msg)
			}
		})
	}
}

func TestDefaultWorkflowDeploysEveryInlineTopology(t *testing.T) {
	app := seedApp()
	app.Spec.Workflow = nil
	app.Spec.Policies = []v1beta1.AppPolicy{{Name: "everywhere", Type: "topology", Properties: rawx(`{"clusterLabelSelector":{}}`)}}
	spec, err := Resolve(context.Background(), seedHub(), app)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Steps) != 1 || spec.Steps[0].Policies[0] != "everywhere" || !spec.Steps[0].Auto {
		t.Errorf("steps %+v", spec.Steps)
	}
}

func TestKey(t *testing.T) {
	app := seedApp()
	if got := Key(app); got != "publishVersion:version1" {
		t.Errorf("Key = %q", got)
	}
	app.Generation = 5
	if got := Key(app); got != "publishVersion:version1" {
		t.Errorf("spec change with the same publishVersion changed the key: %q", got)
	}
	delete(app.Annotations, v1beta1.AnnotationPublishVersion)
	if got := Key(app); got != "generation:5" {
		t.Errorf("Key without publishVersion = %q", got)
	}
}

// What a namespace may reach is what hub admins granted, checked before
// anything runs.
func TestResolveConfinesToWhatIsGranted(t *testing.T) {
	ns := func(ns string) *v1alpha1.Policy {
		return &v1alpha1.Policy{Type: "topology", Properties: rawx(`{"clusters":["c1"],"namespace":"` + ns + `"}`)}
	}
	clusterRole := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "reader"}}}
	withClusterRole := func(a *v1beta1.Application, h *memHub) {
		h.objects["ClusterRole/reader"] = clusterRole
		a.Spec.Components[0].Properties = rawx(`{"objects":[{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","name":"reader"}]}`)
	}
	grantTo := func(h *memHub, spec grantv1alpha1.ScopeGrantSpec) {
		h.grants.Scopes = append(h.grants.Scopes, grantv1alpha1.ScopeGrant{ObjectMeta: metav1.ObjectMeta{Name: "g"}, Spec: spec})
	}
	tests := []struct {
		name   string
		mutate func(a *v1beta1.Application, h *memHub)
		reason string
		msg    string
	}{
		{"the seed, no grant needed", func(*v1beta1.Application, *memHub) {}, "", ""},
		{"its own namespace named", func(_ *v1beta1.Application, h *memHub) { h.policies["cluster-test"] = ns("demo") }, "", ""},
		{"another namespace", func(_ *v1beta1.Application, h *memHub) { h.policies["cluster-test"] = ns("kube-system") },
			grant.ReasonNamespaceNotGranted, `policy "cluster-test": Applications of namespace "demo" deploy only into namespace "demo"`},
		{"another namespace, granted", func(_ *v1beta1.Application, h *memHub) {
			h.policies["cluster-test"] = ns("kube-system")
			grantTo(h, grantv1alpha1.ScopeGrantSpec{Namespaces: []string{"demo"}, TargetNamespaces: []string{"kube-system"}})
		}, "", ""},
		{"the agent's namespace, granted anywhere", func(_ *v1beta1.Application, h *memHub) {
			h.policies["cluster-test"] = ns(grant.AgentNamespace)
			grantTo(h, grantv1alpha1.ScopeGrantSpec{Namespaces: []string{"*"}, TargetNamespaces: []string{"*"}})
		}, grant.ReasonReservedNamespace, `the cluster agent's own`},
		{"a cluster-scoped kind", withClusterRole, grant.ReasonKindNotGranted, "ClusterRole reader: ClusterRole.rbac.authorization.k8s.io is cluster-scoped"},
		{"a cluster-scoped kind, granted", func(a *v1beta1.Application, h *memHub) {
			withClusterRole(a, h)
			grantTo(h, grantv1alpha1.ScopeGrantSpec{Namespaces: []string{"demo"}, ClusterScopedKinds: []grantv1alpha1.GroupKind{{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}}})
		}, "", ""},
		{"a cluster of a set the namespace is not bound to", func(_ *v1beta1.Application, h *memHub) {
			h.clusters = map[string]map[string]string{"c2": {"cluster.open-cluster-management.io/clusterset": "prod"}}
		}, grant.ReasonClusterNotBound, `policy "cluster-prod": cluster "c2" is in ManagedClusterSet prod`},
		{"a cluster of a set the namespace is bound to", func(_ *v1beta1.Application, h *memHub) {
			h.clusters = map[string]map[string]string{"c2": {"cluster.open-cluster-management.io/clusterset": "prod"}}
			h.grants.Bindings = []clusterv1beta2.ManagedClusterSetBinding{{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "prod"}, Spec: clusterv1beta2.ManagedClusterSetBindingSpec{ClusterSet: "prod"}}}
		}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, hub := seedApp(), seedHub()
			tt.mutate(app, hub)
			_, err := Resolve(context.Background(), hub, app)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Resolve() = %v, want it allowed", err)
				}
				return
			}
			p, ok := problem.As(err)
			if !ok || p.Reason != tt.reason || !strings.Contains(p.Message, tt.msg) {
				t.Fatalf("Resolve() = %v, want %s containing %q", err, tt.reason, tt.msg)
			}
		})
	}
}

// KubeVela's take-over and read-only policies name the kinds the release
// may adopt, and the kinds it only reads.
func TestKindSelectingPolicies(t *testing.T) {
	for _, typ := range []string{"take-over", "read-only"} {
		tests := []struct {
			name     string
			policies []v1beta1.AppPolicy
			want     []string
			reason   string
		}{
			{"none", nil, nil, ""},
			{"by resource type", []v1beta1.AppPolicy{{Name: "p", Type: typ, Properties: rawx(`{"rules":[{"selector":{"resourceTypes":["Deployment","ConfigMap"]}}]}`)}}, []string{"Deployment", "ConfigMap"}, ""},
			{"a rule without a selector: every kind", []v1beta1.AppPolicy{{Name: "p", Type: typ, Properties: rawx(`{"rules":[{}]}`)}}, []string{"*"}, ""},
			{"no rules: every kind", []v1beta1.AppPolicy{{Name: "p", Type: typ}}, []string{"*"}, ""},
			{"other policies are not " + typ, []v1beta1.AppPolicy{{Name: "t", Type: "topology", Properties: rawx(`{"clusters":["c1"]}`)}}, nil, ""},
			{"unreadable", []v1beta1.AppPolicy{{Name: "p", Type: typ, Properties: rawx(`{"rules":"all"}`)}}, nil, ReasonInvalidPolicy},
		}
		for _, tt := range tests {
			t.Run(typ+"/"+tt.name, func(t *testing.T) {
				app := seedApp()
				app.Spec.Policies = tt.policies
				spec, err := Resolve(context.Background(), seedHub(), app)
				if tt.reason != "" {
					if !problem.Is(err, tt.reason) || !strings.Contains(err.Error(), typ) {
						t.Fatalf("Resolve() = %v, want %s naming %s", err, tt.reason, typ)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				got, other := spec.TakeOver, spec.ReadOnly
				if typ == "read-only" {
					got, other = other, got
				}
				if strings.Join(got, ",") != strings.Join(tt.want, ",") || len(other) != 0 {
					t.Errorf("%s kinds %v (other: %v), want %v", typ, got, other, tt.want)
				}
			})
		}
	}
}
