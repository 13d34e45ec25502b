package gate_test

import (
	"encoding/json"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
)

// What the tests do on the hub: Applications, RBAC, resume requests, and
// the Events the gate writes.

// createApp creates Application app on the hub, releasing publishVersion v1.
func (f *fixture) createApp(app string) {
	f.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
		"metadata": map[string]any{"name": app, "namespace": f.ns, "annotations": map[string]any{v1beta1.AnnotationPublishVersion: "v1"}},
		"spec":     map[string]any{"components": []any{map[string]any{"name": app, "type": "ref-objects"}}},
	}}
	if _, err := f.dyn.Resource(v1beta1.ApplicationResource).Namespace(f.ns).Create(f.ctx, u, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// mayResume gives user the RBAC `kubectl flotilla workflow resume` needs
// on the fixture's namespace.
func (f *fixture) mayResume(user string) {
	f.t.Helper()
	name := "resume-" + user
	if _, err := f.cs.RbacV1().Roles(f.ns).Create(f.ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1beta1.GroupVersion.Group}, Resources: []string{"applications", "applications/status"}, Verbs: []string{"get", "update", "patch"}}}}, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.cs.RbacV1().RoleBindings(f.ns).Create(f.ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	// The hub's authorizer learns of the binding shortly.
	eventually.True(f.t, patience, user+"'s RBAC to take effect", func() (bool, error) {
		res, err := f.cs.AuthorizationV1().SubjectAccessReviews().Create(f.ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: f.ns, Verb: "update", Group: v1beta1.GroupVersion.Group, Resource: "applications", Subresource: "status"},
		}}, metav1.CreateOptions{})
		return err == nil && res.Status.Allowed, err
	})
}

// resume writes a resume request on app's status as the CLI does (the
// CLI names its user as the hub knows it), approving step deploy-prod of
// release <app>-v1.
func (f *fixture) resume(app, id, user string) {
	f.t.Helper()
	req := v1beta1.ResumeRequest{ID: id, Step: "deploy-prod", Release: app + "-v1", Decision: events.DecisionApprove, User: user,
		Groups: []string{"system:authenticated"}, Reason: "from the CLI", Time: metav1.Now().Rfc3339Copy()}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"workflow": map[string]any{"resume": req}}})
	if _, err := f.dyn.Resource(v1beta1.ApplicationResource).Namespace(f.ns).Patch(f.ctx, app, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-flotilla"}, "status"); err != nil {
		f.t.Fatal(err)
	}
}

// kubeEvents are the Kubernetes Events on Application app.
func (f *fixture) kubeEvents(app string) []corev1.Event {
	f.t.Helper()
	evs, err := f.cs.CoreV1().Events(f.ns).List(f.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + app})
	if err != nil {
		f.t.Fatal(err)
	}
	return evs.Items
}

// kubeEvent waits for the gate's Kubernetes Event about decision id on app.
func (f *fixture) kubeEvent(app, id string) corev1.Event {
	f.t.Helper()
	var found corev1.Event
	eventually.True(f.t, patience, "the Kubernetes Event of decision "+id, func() (bool, error) {
		for _, e := range f.kubeEvents(app) {
			if e.Annotations[v1beta1.AnnotationDecisionID] == id {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	return found
}
