package admission_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/flotilla-dev/flotilla/deploy/admission"
	"github.com/flotilla-dev/flotilla/deploy/crds"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

func TestObjectsDecode(t *testing.T) {
	p, b, err := admission.Objects()
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != admission.Name || b.Name != admission.Name || b.Spec.PolicyName != p.Name || len(p.Spec.Validations) == 0 {
		t.Errorf("binding %q for policy %q with %d validations", b.Spec.PolicyName, p.Name, len(p.Spec.Validations))
	}
}

// Whoever may write an Application's status may write a resume request,
// but only in their own name and groups.
func TestResumeRequestNamesItsWriter(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := crds.Install(ctx, env.Hub.Config); err != nil {
		t.Fatal(err)
	}
	if err := admission.Install(ctx, env.Hub.Config); err != nil {
		t.Fatal(err)
	}
	if err := admission.Install(ctx, env.Hub.Config); err != nil {
		t.Fatalf("installing again: %v", err)
	}
	cs := kubernetes.NewForConfigOrDie(env.Hub.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// mallory and alice may both update the status (as resuming needs).
	if _, err := cs.RbacV1().Roles("demo").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "resumer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"core.oam.dev"}, Resources: []string{"applications", "applications/status"}, Verbs: []string{"get", "update", "patch"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings("demo").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "resumers"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "resumer"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "mallory"}, {Kind: "User", Name: "alice"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	admin := dynamic.NewForConfigOrDie(env.Hub.Config)
	app := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
		"metadata": map[string]any{"name": "demo", "namespace": "demo"},
		"spec":     map[string]any{"components": []any{map[string]any{"name": "demo", "type": "ref-objects"}}},
	}}
	if _, err := admin.Resource(v1beta1.ApplicationResource).Namespace("demo").Create(ctx, app, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	as := func(user string, groups ...string) dynamic.ResourceInterface {
		cfg := rest.CopyConfig(env.Hub.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
		return dynamic.NewForConfigOrDie(cfg).Resource(v1beta1.ApplicationResource).Namespace("demo")
	}
	resume := func(c dynamic.ResourceInterface, id, user string, groups ...string) error {
		req := map[string]any{"id": id, "user": user, "step": "deploy-prod", "decision": "approve", "time": time.Now().UTC().Format(time.RFC3339)}
		if len(groups) > 0 {
			req["groups"] = groups
		}
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"workflow": map[string]any{"resume": req}}})
		_, err := c.Patch(ctx, "demo", types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	}

	// The policy takes effect once the API server has loaded it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := resume(as("mallory"), "r1", "alice")
		if err != nil && strings.Contains(err.Error(), "must name its writer") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mallory wrote a resume request in alice's name: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	tests := []struct {
		name    string
		by      dynamic.ResourceInterface
		id      string
		user    string
		groups  []string
		refused string
	}{
		{"in another's name", as("mallory"), "r2", "alice", nil, "must name its writer"},
		{"in own name", as("mallory"), "r3", "mallory", nil, ""},
		{"with a group not held", as("mallory"), "r4", "mallory", []string{"release-managers"}, "may name only its writer"},
		{"with a group held", as("alice", "release-managers"), "r5", "alice", []string{"release-managers"}, ""},
		{"by a cluster admin in another's name", as("admin", "system:masters"), "r6", "alice", nil, "must name its writer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := resume(tt.by, tt.id, tt.user, tt.groups...)
			switch {
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Errorf("err = %v, want a refusal saying %q", err, tt.refused)
			}
		})
	}
	// Operation requests (suspend, terminate, ...) name their writer too.
	operate := func(c dynamic.ResourceInterface, id, user string) error {
		op := map[string]any{"id": id, "type": "suspend", "user": user, "time": time.Now().UTC().Format(time.RFC3339)}
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"workflow": map[string]any{"operation": op}}})
		_, err := c.Patch(ctx, "demo", types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	}
	if err := operate(as("mallory"), "o1", "alice"); err == nil || !strings.Contains(err.Error(), "operation request must name its writer") {
		t.Errorf("mallory suspending in alice's name: %v", err)
	}
	if err := operate(as("mallory"), "o2", "mallory"); err != nil {
		t.Errorf("mallory suspending in her own name: %v", err)
	}
	// Other writers (the planner) keep a request as it is, or remove it.
	patch := []byte(`{"status":{"observedGeneration":1}}`)
	if _, err := admin.Resource(v1beta1.ApplicationResource).Namespace("demo").Patch(ctx, "demo", types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("a status write keeping alice's request: %v", err)
	}
	patch = []byte(`{"status":{"workflow":{"resume":null}}}`)
	if _, err := admin.Resource(v1beta1.ApplicationResource).Namespace("demo").Patch(ctx, "demo", types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("removing the request: %v", err)
	}
}
