package planner

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/grant"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/release"
)

// hubReader is release.Hub over the planner's informer caches (Workflows,
// Policies, grants, ManagedClusters) and direct reads of referenced objects
// of any kind.
type hubReader struct {
	dyn       dynamic.Interface
	mapper    meta.ResettableRESTMapper
	workflows cache.GenericLister
	policies  cache.GenericLister
	// scopes, sets and bindings are what hub admins granted; clusters the
	// ManagedClusters.
	scopes, sets, bindings, clusters cache.GenericLister
	// missing is told the resource of a referenced object not found, so
	// its creation is noticed at once rather than on the next resync.
	missing func(schema.GroupVersionResource)
}

func (h *hubReader) Workflow(_ context.Context, ns, name string) (*v1alpha1.Workflow, error) {
	wf := &v1alpha1.Workflow{}
	found, err := getTyped(h.workflows, ns, name, wf)
	if !found || err != nil {
		return nil, err
	}
	return wf, nil
}

func (h *hubReader) Policy(_ context.Context, ns, name string) (*v1alpha1.Policy, error) {
	p := &v1alpha1.Policy{}
	found, err := getTyped(h.policies, ns, name, p)
	if !found || err != nil {
		return nil, err
	}
	return p, nil
}

func getTyped(l cache.GenericLister, ns, name string, into any) (bool, error) {
	obj, err := l.ByNamespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return false, fmt.Errorf("unexpected %T in cache", obj)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return false, fmt.Errorf("decode %s %s/%s: %w", u.GetKind(), ns, name, err)
	}
	return true, nil
}

// Object reads a referenced object of any namespaced kind the hub serves.
func (h *hubReader) Object(ctx context.Context, ns string, ref release.ObjectRef) (*unstructured.Unstructured, error) {
	mapping, err := h.mapping(ref)
	if meta.IsNoMatchError(err) {
		// A CRD installed since the mapper last looked.
		h.mapper.Reset()
		mapping, err = h.mapping(ref)
	}
	if meta.IsNoMatchError(err) {
		return nil, problem.New(release.ReasonInvalidObjectReference, "%s: the hub serves no such kind (%v)", ref, err)
	}
	if err != nil {
		return nil, err
	}
	var ri dynamic.ResourceInterface = h.dyn.Resource(mapping.Resource).Namespace(ns)
	if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
		// Cluster-scoped: deployed only where the namespace is granted the kind.
		ri = h.dyn.Resource(mapping.Resource)
	}
	obj, err := ri.Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if h.missing != nil {
			h.missing(mapping.Resource)
		}
		return nil, nil
	}
	return obj, err
}

func (h *hubReader) mapping(ref release.ObjectRef) (*meta.RESTMapping, error) {
	if gvk, ok := ref.GVK(); ok {
		return h.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	gvk, err := h.mapper.KindFor(schema.GroupVersionResource{Group: ref.Group, Resource: ref.Resource})
	if err != nil {
		return nil, err
	}
	return h.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
}

// Grants are the ScopeGrants, ManagedClusterSets and ManagedClusterSetBindings.
func (h *hubReader) Grants(context.Context) (grant.Grants, error) {
	var lists [3][]runtime.Object
	for i, l := range []cache.GenericLister{h.scopes, h.sets, h.bindings} {
		objs, err := l.List(labels.Everything())
		if err != nil {
			return grant.Grants{}, err
		}
		lists[i] = objs
	}
	return grant.FromObjects(lists[0], lists[1], lists[2])
}

// ClusterLabels are a ManagedCluster's labels.
func (h *hubReader) ClusterLabels(_ context.Context, name string) (map[string]string, bool, error) {
	obj, err := h.clusters.Get(name)
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, false, err
	}
	return m.GetLabels(), true, nil
}
