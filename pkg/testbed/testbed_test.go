package testbed

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// One test bed serves every check below; starting it is the slow part.
func TestHubAndTwoManagedClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real API servers")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	began := time.Now()
	env, err := Start(ctx, Options{Clusters: []string{"test", "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = env.Stop()
		}
	}()
	t.Logf("hub + 2 managed clusters ready in %v", time.Since(began).Round(time.Millisecond))

	hub := clientset(t, env.Hub)
	test, prod := clientset(t, env.Cluster("test")), clientset(t, env.Cluster("prod"))

	t.Run("deployment becomes ready in managed clusters only", func(t *testing.T) {
		for _, cs := range []*kubernetes.Clientset{hub, test, prod} {
			if _, err := cs.AppsV1().Deployments("default").Create(ctx, deployment("demo"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for name, cs := range map[string]*kubernetes.Clientset{"test": test, "prod": prod} {
			waitReady(ctx, t, name, cs, "demo")
		}
		d, err := hub.AppsV1().Deployments("default").Get(ctx, "demo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ReadyReplicas != 0 || d.Status.ObservedGeneration != 0 {
			t.Errorf("hub ran its Deployment: ready=%d observedGeneration=%d", d.Status.ReadyReplicas, d.Status.ObservedGeneration)
		}
		pods, err := hub.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != 0 {
			t.Errorf("hub has %d pods, want none", len(pods.Items))
		}
		nodes, err := hub.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 0 {
			t.Errorf("hub has %d nodes, want none", len(nodes.Items))
		}
	})

	t.Run("clusters are isolated", func(t *testing.T) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "only-in-test"}, Data: map[string]string{"k": "v"}}
		if _, err := test.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := test.CoreV1().ConfigMaps("default").Get(ctx, cm.Name, metav1.GetOptions{}); err != nil {
			t.Fatalf("test cannot read its own ConfigMap: %v", err)
		}
		for name, cs := range map[string]*kubernetes.Clientset{"prod": prod, "hub": hub} {
			_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, cm.Name, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s sees test's ConfigMap: err=%v", name, err)
			}
		}
		// A credential of one cluster is refused by another.
		cross := *env.Cluster("prod").Config
		cross.Host = env.Cluster("test").URL
		cs, err := kubernetes.NewForConfig(&cross)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
			t.Error("prod's admin credential was accepted by test's API server")
		}
	})

	t.Run("custom resources on the hub", func(t *testing.T) {
		ext, err := apiextensions.NewForConfig(env.Hub.Config)
		if err != nil {
			t.Fatal(err)
		}
		crd := widgetCRD()
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		dyn, err := dynamic.NewForConfig(env.Hub.Config)
		if err != nil {
			t.Fatal(err)
		}
		gvr := schema.GroupVersionResource{Group: "example.flotilla.dev", Version: "v1", Resource: "widgets"}
		w := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.flotilla.dev/v1", "kind": "Widget",
			"metadata": map[string]any{"name": "w1"},
			"spec":     map[string]any{"size": int64(3)},
		}}
		// The CRD's resource is served a moment after it is created.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err = dyn.Resource(gvr).Namespace("default").Create(ctx, w, metav1.CreateOptions{})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("create widget: %v", err)
		}
		got, err := dyn.Resource(gvr).Namespace("default").Get(ctx, "w1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		size, _, _ := unstructured.NestedInt64(got.Object, "spec", "size")
		if size != 3 {
			t.Errorf("widget spec.size = %d, want 3", size)
		}
		// The CRD exists only on the hub.
		if _, err := apiextensionsFor(t, env.Cluster("test")).ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("CRD visible in managed cluster test: err=%v", err)
		}
	})

	pids := env.PIDs()
	// etcd, 3 API servers, and controller manager, scheduler and kwok per managed cluster.
	if want := 1 + 3 + 2*3; len(pids) != want {
		t.Errorf("started %d processes, want %d", len(pids), want)
	}
	began = time.Now()
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	t.Logf("stopped in %v", time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
}

func clientset(t *testing.T, c *Cluster) *kubernetes.Clientset {
	t.Helper()
	if c == nil {
		t.Fatal("no such cluster")
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func apiextensionsFor(t *testing.T, c *Cluster) *apiextensions.Clientset {
	t.Helper()
	cs, err := apiextensions.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func waitReady(ctx context.Context, t *testing.T, cluster string, cs *kubernetes.Clientset, name string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ReadyReplicas == 1 && d.Status.AvailableReplicas == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: Deployment %s not 1/1 Ready: %+v", cluster, name, d.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func deployment(name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: name, Image: "registry.cn-hangzhou.aliyuncs.com/acs/rollouts-demo:red",
				}}},
			},
		},
	}
}

func widgetCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.flotilla.dev"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "example.flotilla.dev",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{"size": {Type: "integer"}}},
					},
				}},
			}},
		},
	}
}
