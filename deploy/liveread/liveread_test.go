package liveread

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

func TestObjects(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	for _, tt := range []struct {
		name    string
		o       Options
		wantErr string
		check   func(t *testing.T, byKind map[string]*unstructured.Unstructured)
	}{
		{name: "no CA", o: Options{}, wantErr: "CA bundle is required"},
		{name: "an IP", o: Options{CABundle: ca, Address: "127.0.0.1:8443"}, wantErr: "not an IP"},
		{name: "no port", o: Options{CABundle: ca, Address: "localhost"}, wantErr: "address"},
		{name: "in the hub's cluster", o: Options{CABundle: ca}, check: func(t *testing.T, k map[string]*unstructured.Unstructured) {
			if got, _, _ := unstructured.NestedString(k["APIService"].Object, "spec", "caBundle"); got != base64.StdEncoding.EncodeToString(ca) {
				t.Errorf("caBundle %q", got)
			}
			if sel, _, _ := unstructured.NestedStringMap(k["Service"].Object, "spec", "selector"); sel["app.kubernetes.io/name"] != "flotilla-dispatcher" {
				t.Errorf("the Service selects %v, not the dispatcher", sel)
			}
		}},
		{name: "outside it", o: Options{CABundle: ca, Address: "localhost:8443"}, check: func(t *testing.T, k map[string]*unstructured.Unstructured) {
			if typ, _, _ := unstructured.NestedString(k["Service"].Object, "spec", "type"); typ != "ExternalName" {
				t.Errorf("Service type %q", typ)
			}
			if port, _, _ := unstructured.NestedInt64(k["APIService"].Object, "spec", "service", "port"); port != 8443 {
				t.Errorf("APIService port %d", port)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Objects(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Objects = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			byKind := map[string]*unstructured.Unstructured{}
			for _, o := range objs {
				byKind[o.GetKind()] = o
			}
			tt.check(t, byKind)
		})
	}
}

// The shipped objects, as a hub admin would apply them in the hub's own
// cluster, pass a real API server's server-side dry run.
func TestManifestDryRunsOnARealHub(t *testing.T) {
	tb := testbed.StartT(t, testbed.Options{Dir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(tb.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": Namespace}}}
	if _, err := dyn.Resource(namespaces).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(Options{CABundle: []byte("ca")})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		var ri dynamic.ResourceInterface = dyn.Resource(resources[u.GetKind()])
		if u.GetNamespace() != "" {
			ri = dyn.Resource(resources[u.GetKind()]).Namespace(u.GetNamespace())
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "test", DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}
