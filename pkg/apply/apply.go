package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// FieldManager is the one server-side-apply field manager of Flotilla's agent.
const FieldManager = "flotilla-agent"

// Labels put on every applied object.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "flotilla"
	LabelApplication = "flotilla.dev/application"
	LabelAppNS       = "flotilla.dev/application-namespace"
	LabelRelease     = "flotilla.dev/release"
)

// InventoryNamespace holds one inventory ConfigMap per application.
const InventoryNamespace = "flotilla-system"

// App names an application on the hub.
type App struct {
	Namespace string
	Name      string
	UID       string
}

func (a App) String() string { return a.Namespace + "/" + a.Name }

// Ref identifies an applied object.
type Ref struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version"`
	Kind      string `json:"kind"`
	Resource  string `json:"resource"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// GVR is the reference's resource.
func (r Ref) GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}
}

// Same reports whether two references name the same object: group, kind,
// namespace and name (another version of the same kind is the same object).
func (r Ref) Same(o Ref) bool {
	return r.Group == o.Group && r.Kind == o.Kind && r.Namespace == o.Namespace && r.Name == o.Name
}

func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// Outcome is what happened to one object.
type Outcome struct {
	Ref    Ref
	Object *unstructured.Unstructured // as the API server returned it; nil on error
	Err    error
}

// Result of applying one release.
type Result struct {
	Objects []Outcome
	Pruned  []Ref
	// PruneErrs are objects a newer release dropped that could not be deleted.
	PruneErrs []error
}

// Failed returns the outcomes that failed.
func (r *Result) Failed() []Outcome {
	var out []Outcome
	for _, o := range r.Objects {
		if o.Err != nil {
			out = append(out, o)
		}
	}
	return out
}

// unmappedError is an object whose kind the cluster's discovery did not
// resolve: not served (NoMatch), or discovery failed.
type unmappedError struct {
	ref Ref
	err error
}

func (e *unmappedError) Error() string {
	return fmt.Sprintf("apply %s: kind not served by the cluster: %v", e.ref, e.err)
}
func (e *unmappedError) Unwrap() error { return e.err }

// Applier applies applications to one cluster.
type Applier struct {
	dyn    dynamic.Interface
	cs     kubernetes.Interface
	mapper meta.ResettableRESTMapper
	tracer trace.Tracer
}

// NewApplier returns an applier over the cluster's clients; tracer (nil:
// none) records a span per object applied and one for prune and inventory.
func NewApplier(dyn dynamic.Interface, cs kubernetes.Interface, mapper meta.ResettableRESTMapper, tracer trace.Tracer) *Applier {
	if tracer == nil {
		tracer = telemetry.NoopTracer()
	}
	return &Applier{dyn: dyn, cs: cs, mapper: mapper, tracer: tracer}
}

// Mapping resolves an object's kind to its resource, refreshing discovery
// once for a kind the cluster serves only since the last look.
func (a *Applier) Mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return m, err
}

// Apply server-side-applies objs (in dependency order, creating namespaces
// as needed), then prunes what the application's previous release had and
// this one does not, and records the new inventory. An object the API
// server rejects fails alone: the others are still applied.
func (a *Applier) Apply(ctx context.Context, app App, release string, objs []*unstructured.Unstructured) (*Result, error) {
	objs = slices.Clone(objs)
	Sort(objs)
	res := &Result{}
	ensured := map[string]bool{}
	var desired []Ref
	for _, obj := range objs {
		obj = obj.DeepCopy()
		octx, span := a.tracer.Start(ctx, "apply "+obj.GetKind(), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(telemetry.AttrObject.String(obj.GetKind()+" "+obj.GetNamespace()+"/"+obj.GetName())))
		ref, applied, err := a.applyOne(octx, app, release, obj, ensured)
		telemetry.SetError(span, err)
		span.End()
		var unmapped *unmappedError
		if errors.As(err, &unmapped) && !meta.IsNoMatchError(unmapped.err) {
			// Discovery failed: pruning now could delete what is still wanted.
			return res, err
		}
		if ref.Resource != "" {
			desired = append(desired, ref)
		}
		res.Objects = append(res.Objects, Outcome{Ref: ref, Object: applied, Err: err})
	}
	ctx, span := a.tracer.Start(ctx, "prune and record inventory")
	defer span.End()
	prev, err := a.Inventory(ctx, app)
	if err != nil {
		return res, err
	}
	for _, old := range prev {
		if slices.ContainsFunc(desired, old.Same) {
			continue
		}
		if err := a.delete(ctx, old); err != nil {
			res.PruneErrs = append(res.PruneErrs, err)
			desired = append(desired, old) // keep it in the inventory to try again
			continue
		}
		res.Pruned = append(res.Pruned, old)
	}
	if err := a.saveInventory(ctx, app, release, desired); err != nil {
		return res, err
	}
	return res, nil
}

// ApplyObject re-applies one object of an application (drift repair).
func (a *Applier) ApplyObject(ctx context.Context, app App, release string, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	_, applied, err := a.applyOne(ctx, app, release, obj.DeepCopy(), map[string]bool{})
	return applied, err
}

func (a *Applier) applyOne(ctx context.Context, app App, release string, obj *unstructured.Unstructured, ensured map[string]bool) (Ref, *unstructured.Unstructured, error) {
	gvk := obj.GroupVersionKind()
	ref := Ref{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
	m, err := a.Mapping(gvk)
	if err != nil {
		if ref.Namespace == "" {
			ref.Namespace = app.Namespace
		}
		return ref, nil, &unmappedError{ref: ref, err: err}
	}
	ref.Resource = m.Resource.Resource
	namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
	if !namespaced {
		ref.Namespace = ""
		obj.SetNamespace("")
	} else if ref.Namespace == "" {
		ref.Namespace = app.Namespace
		obj.SetNamespace(app.Namespace)
	}
	if namespaced && !ensured[ref.Namespace] {
		if err := a.ensureNamespace(ctx, ref.Namespace); err != nil {
			return ref, nil, err
		}
		ensured[ref.Namespace] = true
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelApplication] = app.Name
	labels[LabelAppNS] = app.Namespace
	labels[LabelRelease] = release
	obj.SetLabels(labels)
	obj.SetResourceVersion("")
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if namespaced {
		ri = a.dyn.Resource(m.Resource).Namespace(ref.Namespace)
	}
	applied, err := ri.Apply(ctx, ref.Name, obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return ref, nil, fmt.Errorf("apply %s: %w", ref, err)
	}
	return ref, applied, nil
}

func (a *Applier) ensureNamespace(ctx context.Context, ns string) error {
	_, err := a.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

func (a *Applier) delete(ctx context.Context, ref Ref) error {
	var ri dynamic.ResourceInterface = a.dyn.Resource(ref.GVR())
	if ref.Namespace != "" {
		ri = a.dyn.Resource(ref.GVR()).Namespace(ref.Namespace)
	}
	policy := metav1.DeletePropagationBackground
	err := ri.Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", ref, err)
	}
	return nil
}

// Delete removes everything the application put in the cluster (in reverse
// dependency order), then its inventory.
func (a *Applier) Delete(ctx context.Context, app App) error {
	refs, err := a.Inventory(ctx, app)
	if err != nil {
		return err
	}
	slices.SortStableFunc(refs, func(x, y Ref) int { return rank(y.Kind) - rank(x.Kind) })
	var errs []error
	for _, r := range refs {
		if err := a.delete(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	err = a.cs.CoreV1().ConfigMaps(InventoryNamespace).Delete(ctx, inventoryName(app), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete inventory of %s: %w", app, err)
	}
	return nil
}

// Inventory is what the application has in the cluster, as last recorded.
func (a *Applier) Inventory(ctx context.Context, app App) ([]Ref, error) {
	cm, err := a.cs.CoreV1().ConfigMaps(InventoryNamespace).Get(ctx, inventoryName(app), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read inventory of %s: %w", app, err)
	}
	return decodeInventory(cm)
}

// Inventories lists every application's inventory in the cluster.
func (a *Applier) Inventories(ctx context.Context) (map[App][]Ref, error) {
	list, err := a.cs.CoreV1().ConfigMaps(InventoryNamespace).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list inventories: %w", err)
	}
	out := map[App][]Ref{}
	for i := range list.Items {
		cm := &list.Items[i]
		refs, err := decodeInventory(cm)
		if err != nil {
			return nil, err
		}
		out[App{Namespace: cm.Labels[LabelAppNS], Name: cm.Labels[LabelApplication], UID: cm.Data["uid"]}] = refs
	}
	return out, nil
}

func decodeInventory(cm *corev1.ConfigMap) ([]Ref, error) {
	var refs []Ref
	if err := json.Unmarshal([]byte(cm.Data["objects"]), &refs); err != nil {
		return nil, fmt.Errorf("inventory %s is corrupt: %w", cm.Name, err)
	}
	return refs, nil
}

func (a *Applier) saveInventory(ctx context.Context, app App, release string, refs []Ref) error {
	if err := a.ensureNamespace(ctx, InventoryNamespace); err != nil {
		return err
	}
	data, err := json.Marshal(refs)
	if err != nil {
		return err
	}
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": inventoryName(app), "namespace": InventoryNamespace,
			"labels": map[string]any{LabelManagedBy: ManagedByValue, LabelApplication: app.Name, LabelAppNS: app.Namespace, LabelRelease: release},
		},
		"data": map[string]any{"objects": string(data), "uid": app.UID, "release": release, "updated": time.Now().UTC().Format(time.RFC3339)},
	}}
	_, err = a.dyn.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace(InventoryNamespace).
		Apply(ctx, cm.GetName(), cm, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("save inventory of %s: %w", app, err)
	}
	return nil
}

// inventoryName is unique per application: namespaces are DNS labels, so
// the first dot separates namespace from name.
func inventoryName(app App) string {
	name := "inventory." + app.Namespace + "." + app.Name
	if len(name) > 253 {
		name = name[:253]
	}
	return strings.TrimRight(name, ".-")
}
