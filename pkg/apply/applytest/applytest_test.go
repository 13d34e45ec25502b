package applytest

import (
	"context"
	"errors"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

func TestFaultsFailTheChosenCallsOnly(t *testing.T) {
	ctx := context.Background()
	cms := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	d := NewDynamic(dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{cms: "ConfigMapList"}))
	boom := errors.New("boom")
	f := d.Fail(Call{Verb: VerbCreate, Name: "b"}, 2, boom)
	create := func(ns, name string) error {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("v1")
		u.SetKind("ConfigMap")
		u.SetName(name)
		_, err := d.Resource(cms).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
		return err
	}
	for i, tt := range []struct {
		ns, name string
		want     error
	}{{"x", "a", nil}, {"x", "b", boom}, {"y", "b", boom}, {"z", "b", nil}} {
		if err := create(tt.ns, tt.name); !errors.Is(err, tt.want) {
			t.Errorf("create %d (%s/%s) = %v, want %v", i, tt.ns, tt.name, err, tt.want)
		}
	}
	if f.Hits() != 2 {
		t.Errorf("hits = %d, want 2", f.Hits())
	}
	if _, err := d.Resource(cms).Namespace("z").Get(ctx, "b", metav1.GetOptions{}); err != nil {
		t.Errorf("the create that passed did not reach the client: %v", err)
	}
	if _, err := d.Resource(cms).Namespace("y").Get(ctx, "b", metav1.GetOptions{}); err == nil {
		t.Error("a failed create reached the client")
	}
	if err := d.Resource(cms).Namespace("x").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []Call{{VerbCreate, "configmaps", "x", "a"}, {VerbCreate, "configmaps", "x", "b"}, {VerbCreate, "configmaps", "y", "b"},
		{VerbCreate, "configmaps", "z", "b"}, {VerbDelete, "configmaps", "x", "a"}}
	if got := d.Calls(Call{}); !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
	if got := d.Calls(Call{Verb: VerbDelete}); !slices.Equal(got, want[4:]) {
		t.Errorf("deletes = %v, want %v", got, want[4:])
	}
}
