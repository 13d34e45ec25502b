package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	deployagent "github.com/flotilla-dev/flotilla/deploy/agent"
	"github.com/flotilla-dev/flotilla/pkg/agent"
	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// The agent with only rbac.yaml's rights, logged in with its own
// ServiceAccount's token: it writes a namespace's objects only as that
// namespace's executor, where the cluster's admin bound one, and nothing
// as itself.
func TestTheAgentsRights(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{Clusters: []string{"c1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c1 := env.Cluster("c1")
	kubectl := func(args ...string) string {
		t.Helper()
		out, _, err := env.Kubectl(ctx, "c1", args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rbac := write("rbac.yaml", deployagent.RBAC)
	kubectl("apply", "-f", rbac)
	kubectl("create", "namespace", "team")
	kubectl("apply", "-f", write("executor.yaml", []byte(strings.ReplaceAll(string(deployagent.ExecutorExample), "namespace: demo", "namespace: team"))))

	// Its own credentials: a token of its ServiceAccount.
	admin, err := kubernetes.NewForConfig(c1.Config)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CoreV1().ServiceAccounts("flotilla-system").CreateToken(ctx, "flotilla-agent", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: c1.Config.Host, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: c1.Config.CAData}}
	clients, err := hub.NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if who, err := clients.Kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{}); err != nil || who.Status.UserInfo.Username != deployagent.ServiceAccount {
		t.Fatalf("the agent logs in as %v (%v), want %s", who, err, deployagent.ServiceAccount)
	}
	a := apply.NewApplier(clients.Dynamic, clients.Kube, clients.Mapper, nil).WithExecutor(agent.Executors(clients.As, deployagent.Executor))

	objects := func(ns string) []*unstructured.Unstructured {
		var out []*unstructured.Unstructured
		for _, doc := range []string{
			"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: " + ns + "}\ndata: {color: red}\n",
			"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: " + ns + "}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n",
		} {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
		return out
	}
	// Where the admin bound an executor: applied, and pruned, through it.
	team := apply.App{Namespace: "team", Name: "web", UID: "uid-team"}
	res, err := a.Apply(ctx, team, "web-v1", objects("team"))
	if err != nil || len(res.Failed()) != 0 {
		t.Fatalf("apply into team: %v, failed %v", err, res.Failed())
	}
	if _, err := admin.AppsV1().Deployments("team").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("the Deployment is not in team: %v", err)
	}
	res, err = a.Apply(ctx, team, "web-v2", objects("team")[:1])
	if err != nil || len(res.Pruned) != 1 {
		t.Fatalf("prune in team: %v, pruned %v", err, res.Pruned)
	}
	// Where it did not: the namespace is made, nothing is written into it.
	locked := apply.App{Namespace: "locked", Name: "web", UID: "uid-locked"}
	res, err = a.Apply(ctx, locked, "web-v1", objects("locked"))
	if err != nil {
		t.Fatal(err)
	}
	if failed := res.Failed(); len(failed) != 2 || !apierrors.IsForbidden(failed[0].Err) || !strings.Contains(failed[0].Err.Error(), "system:serviceaccount:locked:flotilla-executor") {
		t.Fatalf("apply into locked: failed %v, want both forbidden to its executor", failed)
	}
	if _, err := admin.CoreV1().ConfigMaps("locked").Get(ctx, "settings", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a ConfigMap was written into locked: %v", err)
	}
	// A read-only object is read as the executor too: what the admin lets
	// the namespace's applications see, not all the agent may read.
	if _, err := admin.CoreV1().ConfigMaps("locked").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-settings"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ro := objects("locked")[:1]
	ro[0].SetName("cluster-settings")
	res, err = a.Apply(ctx, apply.App{Namespace: "locked", Name: "reader", UID: "uid-reader"}, "reader-v1", ro, apply.ReadOnly("ConfigMap"))
	if err != nil {
		t.Fatal(err)
	}
	if failed := res.Failed(); len(failed) != 1 || !apierrors.IsForbidden(failed[0].Err) || !strings.Contains(failed[0].Err.Error(), "system:serviceaccount:locked:flotilla-executor") {
		t.Fatalf("read-only in locked: failed %v, want it forbidden to its executor", failed)
	}
	if err := admin.CoreV1().ConfigMaps("team").Delete(ctx, "settings", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ConfigMaps("team").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err = a.Apply(ctx, apply.App{Namespace: "team", Name: "reader", UID: "uid-team-reader"}, "reader-v1", objects("team")[:1], apply.ReadOnly("ConfigMap"))
	if err != nil || len(res.Failed()) != 0 {
		t.Fatalf("read-only in team, whose executor may read: %v, failed %v", err, res.Failed())
	}

	// As itself it writes nothing of an application, nor acts as anyone else.
	if _, err := clients.Kube.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent created a ConfigMap in kube-system as itself: %v", err)
	}
	other, err := clients.As("system:serviceaccount:kube-system:default")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent acted as kube-system's default ServiceAccount: %v", err)
	}
}
