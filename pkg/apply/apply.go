// Package apply owns how an agent puts an application's objects into its
// own cluster and takes them out again: server-side apply with one field
// manager, in the dependency order of one kind table (deletion in the
// reverse order); the labels every applied object carries; the inventory,
// one ConfigMap per application in flotilla-system recording what it put
// there, so that a newer release prunes what it dropped and a deletion
// removes everything; and the health of an applied object (kstatus, with
// the replica summary of workloads).
package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// FieldManager is the one server-side-apply field manager of Flotilla's agent.
const FieldManager = "flotilla-agent"

// Labels put on every applied object (and on inventories). Their values
// are LabelValue of the application's namespace, name and release.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "flotilla"
	LabelApplication = "flotilla.dev/application"
	LabelAppNS       = "flotilla.dev/application-namespace"
	LabelRelease     = "flotilla.dev/release"
)

// InventoryNamespace holds one inventory ConfigMap per application.
const InventoryNamespace = "flotilla-system"

// ReasonInventoryConflict: the inventory ConfigMap an application's name
// leads to records another application. It is never trusted (pruning by it
// would delete the other application's objects).
const ReasonInventoryConflict = "InventoryConflict"

// Reasons an object is refused before it is applied.
const (
	// ReasonNotOwned: the object exists in the cluster and is not this
	// application's, which may not take it over.
	ReasonNotOwned = "ObjectNotOwned"
	// ReasonReservedNamespace: the object would go into the agent's own
	// namespace, which no application writes.
	ReasonReservedNamespace = "ReservedNamespace"
	// ReasonReadOnlyNotFound: a read-only policy selects the object, and
	// it does not exist (the application never creates it).
	ReasonReadOnlyNotFound = "ReadOnlyObjectNotFound"
)

// Option tunes one Apply.
type Option func(*applyOptions)

type applyOptions struct {
	takeOver, readOnly []string
	mark               string
}

// Mark records mark in the application's inventory with what the apply
// put in the cluster (Applier.Mark reads it back): the agent's record of
// which release it applied, which survives its restarts.
func Mark(mark string) Option {
	return func(o *applyOptions) { o.mark = mark }
}

// TakeOver lets the apply adopt existing objects of these kinds that the
// application did not create ("*": every kind): KubeVela's take-over
// policy. Without it an existing object that is not the application's is
// refused (ReasonNotOwned).
func TakeOver(kinds ...string) Option {
	return func(o *applyOptions) { o.takeOver = append(o.takeOver, kinds...) }
}

// ReadOnly makes objects of these kinds ("*": every kind) read-only:
// KubeVela's read-only policy. Such an object is read, never written: it
// must exist (else ReasonReadOnlyNotFound), it is not pruned when a
// release drops it, and the cluster's version is what health is judged on.
func ReadOnly(kinds ...string) Option {
	return func(o *applyOptions) { o.readOnly = append(o.readOnly, kinds...) }
}

// Selects says whether a policy's kinds ("*": every kind) select ref.
func Selects(kinds []string, ref Ref) bool {
	return slices.Contains(kinds, "*") || slices.Contains(kinds, ref.Kind)
}

// labelValueMax is the longest label value Kubernetes accepts.
const labelValueMax = 63

// LabelValue is s as a label value: s itself up to 63 characters (every
// label Flotilla ever wrote), else a prefix of s and a hash of all of it,
// so that a name too long for a label (an Application's may have 253
// characters) still labels its objects, and two such names that share a
// prefix do not share a label.
func LabelValue(s string) string {
	if len(s) <= labelValueMax {
		return s
	}
	return hashed(s, s, labelValueMax)
}

// hashed is a prefix of s followed by a hash of key, max characters in all;
// the prefix ends in an alphanumeric character, as names and label values must.
func hashed(s, key string, max int) string {
	sum := sha256.Sum256([]byte(key))
	suffix := hex.EncodeToString(sum[:])[:16]
	prefix := strings.TrimRight(s[:max-len(suffix)-1], ".-_")
	return prefix + "-" + suffix
}

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
	// ReadOnly: the object was read, not applied (a read-only policy).
	ReadOnly bool
}

// Result of applying one release.
type Result struct {
	Objects []Outcome
	Pruned  []Ref
	// PruneErrs are objects a newer release dropped that could not be deleted.
	PruneErrs []error
	// PruneDeferred counts the objects the release dropped that were kept
	// because it did not apply in full (see Failed).
	PruneDeferred int
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

// errPruneDeferred keeps what a release that applied in part dropped.
var errPruneDeferred = errors.New("prune deferred: the release did not apply in full")

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
	dyn dynamic.Interface
	// executor, when set, writes the applications' objects (WithExecutor).
	executor Executor
	cs       kubernetes.Interface
	mapper   meta.ResettableRESTMapper
	tracer   trace.Tracer
}

// Executor is the client that writes a namespace's objects ("" for
// cluster-scoped ones): with one, the agent applies as the namespace's
// executor ServiceAccount, whose RBAC the cluster's admin grants, so what
// an Application may do in a cluster is bounded there too.
type Executor func(namespace string) (dynamic.Interface, error)

// WithExecutor has the applier write (apply and prune) through e; it
// reads, and keeps its inventories, as itself.
func (a *Applier) WithExecutor(e Executor) *Applier {
	a.executor = e
	return a
}

// writer is the client that writes objects of namespace ns.
func (a *Applier) writer(ns string) (dynamic.Interface, error) {
	if a.executor == nil {
		return a.dyn, nil
	}
	w, err := a.executor(ns)
	if err != nil {
		return nil, fmt.Errorf("the executor of namespace %q: %w", ns, err)
	}
	return w, nil
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
// server rejects fails alone: the others are still applied, and nothing
// is pruned until a release applies in full. An inventory
// that records another application (ReasonInventoryConflict) fails the
// apply before anything is applied.
func (a *Applier) Apply(ctx context.Context, app App, release string, objs []*unstructured.Unstructured, opts ...Option) (*Result, error) {
	var o applyOptions
	for _, opt := range opts {
		opt(&o)
	}
	// The inventory first: one that is not this application's stops
	// everything before anything is applied.
	rec, err := a.record(ctx, app)
	if err != nil {
		return nil, err
	}
	prev := rec.objects
	// What the application may write over: what it applied before, its
	// own labels say so, or a take-over policy names the kind.
	adopt := func(ref Ref, existing *unstructured.Unstructured) bool {
		return slices.ContainsFunc(prev, ref.Same) || owns(app, existing) || agentMade(ref, existing) || Selects(o.takeOver, ref)
	}
	objs = slices.Clone(objs)
	Sort(objs)
	// Intent before the first write: what this release may put in the
	// cluster that the inventory does not record yet. Killed before the
	// release's inventory is saved, the agent still finds it there.
	// The record keeps what last applied in full: its release, and its
	// mark unless it was another application's of the same name (whose
	// mark must not hold this one's releases back).
	intentMark := rec.mark
	if rec.uid != app.UID {
		intentMark = ""
	}
	pending, unresolved, grew := a.pendingOf(app, rec, objs, o.readOnly)
	if grew {
		if err := a.saveInventory(ctx, app, rec.release, prev, pending, intentMark); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	ensured := map[string]bool{}
	var desired, read []Ref
	for _, obj := range objs {
		obj = obj.DeepCopy()
		if Selects(o.readOnly, Ref{Kind: obj.GetKind()}) {
			ref, live, err := a.readOne(ctx, app, obj)
			if unmapped := (*unmappedError)(nil); errors.As(err, &unmapped) && !meta.IsNoMatchError(unmapped.err) {
				return res, err
			}
			read = append(read, ref)
			res.Objects = append(res.Objects, Outcome{Ref: ref, Object: live, Err: err, ReadOnly: true})
			continue
		}
		if unresolved[obj.GroupVersionKind()] {
			// A kind served only since the intent was recorded (a CRD this
			// release applied just before): its objects are recorded
			// pending before they are written, like every other.
			if ref, err := a.Locate(app, obj); err == nil && !slices.ContainsFunc(prev, ref.Same) && !slices.ContainsFunc(pending, ref.Same) {
				pending = append(pending, ref)
				if err := a.saveInventory(ctx, app, rec.release, prev, pending, intentMark); err != nil {
					return res, err
				}
			}
		}
		octx, span := a.tracer.Start(ctx, "apply "+obj.GetKind(), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(telemetry.AttrObject.String(obj.GetKind()+" "+obj.GetNamespace()+"/"+obj.GetName())))
		ref, applied, err := a.applyOne(octx, app, release, obj, ensured, adopt)
		telemetry.SetError(span, err)
		span.End()
		var unmapped *unmappedError
		if errors.As(err, &unmapped) && !meta.IsNoMatchError(unmapped.err) {
			// Discovery failed: pruning now could delete what is still wanted.
			return res, err
		}
		// What the applier refused (not the application's, or in the
		// agent's namespace) is never recorded: a later release dropping
		// it must not prune what was never the application's.
		if _, refused := problem.As(err); !refused {
			desired = append(desired, ref)
		}
		res.Objects = append(res.Objects, Outcome{Ref: ref, Object: applied, Err: err})
	}
	ctx, span := a.tracer.Start(ctx, "prune and record inventory")
	defer span.End()
	// A read-only object an earlier release applied is released: no
	// longer in the inventory, so neither pruned now nor deleted with the
	// application.
	prev = slices.DeleteFunc(slices.Clone(prev), func(r Ref) bool { return slices.ContainsFunc(read, r.Same) })
	// Prune only once the whole release applied: a release the cluster
	// refuses in part leaves the previous release's objects in place (and
	// in the inventory, so that the next release that applies in full
	// prunes them), and fails naming each object refused.
	del := a.delete
	partial := len(res.Failed()) > 0
	if partial {
		del = func(context.Context, Ref) error { return errPruneDeferred }
	}
	inventory, pruned, pruneErrs := prune(ctx, prev, desired, del)
	// What an interrupted release may have applied and this one does not
	// have is pruned too, where the cluster shows it is the application's.
	left, prunedPending, pendingErrs := a.prunePending(ctx, app, pending, prev, desired, read, del)
	pruned, pruneErrs = append(pruned, prunedPending...), append(pruneErrs, pendingErrs...)
	if partial {
		res.PruneDeferred, pruneErrs = len(pruneErrs), nil
	}
	res.Pruned, res.PruneErrs = pruned, pruneErrs
	if err := a.saveInventory(ctx, app, release, inventory, left, o.mark); err != nil {
		return res, err
	}
	return res, nil
}

// ApplyObject re-applies one object of an application (drift repair: the
// object is one the application applied, so it may write over it).
func (a *Applier) ApplyObject(ctx context.Context, app App, release string, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	_, applied, err := a.applyOne(ctx, app, release, obj.DeepCopy(), map[string]bool{}, nil)
	return applied, err
}

// owns says whether an object's labels say it is the application's.
func owns(app App, obj *unstructured.Unstructured) bool {
	l := obj.GetLabels()
	return l[LabelManagedBy] == ManagedByValue && l[LabelApplication] == LabelValue(app.Name) && l[LabelAppNS] == LabelValue(app.Namespace)
}

// locate maps obj to its resource and sets its namespace as it will be
// in the cluster: none for a cluster-scoped kind, the application's when
// a namespaced object names none.
func (a *Applier) locate(app App, obj *unstructured.Unstructured) (Ref, *meta.RESTMapping, error) {
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
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		ref.Namespace = ""
		obj.SetNamespace("")
	} else if ref.Namespace == "" {
		ref.Namespace = app.Namespace
		obj.SetNamespace(app.Namespace)
	}
	return ref, m, nil
}

// readOne reads an object a read-only policy selects: it must exist, and
// is read as the namespace's executor (what the cluster's admin lets an
// application see), never in the agent's own namespace.
func (a *Applier) readOne(ctx context.Context, app App, obj *unstructured.Unstructured) (Ref, *unstructured.Unstructured, error) {
	ref, _, err := a.locate(app, obj)
	if err != nil {
		return ref, nil, err
	}
	if ref.Namespace == InventoryNamespace {
		return ref, nil, problem.New(ReasonReservedNamespace, "read %s: namespace %s is the agent's own: no application reads there", ref, InventoryNamespace)
	}
	live, err := a.ReadAs(ctx, ref)
	if apierrors.IsNotFound(err) {
		return ref, nil, problem.New(ReasonReadOnlyNotFound, "%s does not exist in the cluster: a read-only policy selects it, so the application reads it and never creates it", ref)
	}
	if err != nil {
		return ref, nil, fmt.Errorf("read %s: %w", ref, err)
	}
	return ref, live, nil
}

// Locate is where obj is in the cluster: its resource, and its namespace
// as the apply sets it.
func (a *Applier) Locate(app App, obj *unstructured.Unstructured) (Ref, error) {
	ref, _, err := a.locate(app, obj.DeepCopy())
	return ref, err
}

// ReadAs reads one object as the executor of its namespace writes it
// (the agent itself when there is no executor): an application sees only
// what the cluster's admin lets it.
func (a *Applier) ReadAs(ctx context.Context, ref Ref) (*unstructured.Unstructured, error) {
	w, err := a.writer(ref.Namespace)
	if err != nil {
		return nil, err
	}
	var ri dynamic.ResourceInterface = w.Resource(ref.GVR())
	if ref.Namespace != "" {
		ri = w.Resource(ref.GVR()).Namespace(ref.Namespace)
	}
	return ri.Get(ctx, ref.Name, metav1.GetOptions{})
}

// Get reads one object of the cluster as the agent (not through an executor).
func (a *Applier) Get(ctx context.Context, ref Ref) (*unstructured.Unstructured, error) {
	var ri dynamic.ResourceInterface = a.dyn.Resource(ref.GVR())
	if ref.Namespace != "" {
		ri = a.dyn.Resource(ref.GVR()).Namespace(ref.Namespace)
	}
	return ri.Get(ctx, ref.Name, metav1.GetOptions{})
}

// applyOne applies one object; adopt (nil: anything) says whether an
// existing object may be written over.
func (a *Applier) applyOne(ctx context.Context, app App, release string, obj *unstructured.Unstructured, ensured map[string]bool, adopt func(Ref, *unstructured.Unstructured) bool) (Ref, *unstructured.Unstructured, error) {
	ref, m, err := a.locate(app, obj)
	if err != nil {
		return ref, nil, err
	}
	namespaced := ref.Namespace != ""
	if namespaced && ref.Namespace == InventoryNamespace {
		return ref, nil, problem.New(ReasonReservedNamespace, "apply %s: namespace %s is the agent's own: no application writes there", ref, InventoryNamespace)
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
	for k, v := range appLabels(app, release) {
		labels[k] = v
	}
	obj.SetLabels(labels)
	obj.SetResourceVersion("")
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if namespaced {
		ri = a.dyn.Resource(m.Resource).Namespace(ref.Namespace)
	}
	w, err := a.writer(ref.Namespace)
	if err != nil {
		return ref, nil, err
	}
	var wi dynamic.ResourceInterface = w.Resource(m.Resource)
	if namespaced {
		wi = w.Resource(m.Resource).Namespace(ref.Namespace)
	}
	if adopt != nil {
		// Never taken over unawares: what exists and is not the
		// application's stays someone else's (a forced apply would make
		// it Flotilla's, and its owner's fields ours).
		existing, err := ri.Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return ref, nil, fmt.Errorf("read %s before applying it: %w", ref, err)
		case !adopt(ref, existing):
			return ref, nil, problem.New(ReasonNotOwned, "apply %s: it exists in the cluster and is not application %s's (%s): the agent does not take over what it did not create; a take-over policy lets the application adopt it",
				ref, app, ownerOf(existing))
		}
	}
	applied, err := wi.Apply(ctx, ref.Name, obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
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
	w, err := a.writer(ref.Namespace)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = w.Resource(ref.GVR())
	if ref.Namespace != "" {
		ri = w.Resource(ref.GVR()).Namespace(ref.Namespace)
	}
	policy := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", ref, err)
	}
	return nil
}

// Delete removes everything the application put in the cluster (in reverse
// dependency order), then its inventory. When an object cannot be deleted
// the inventory is kept, so that calling Delete again finishes the job.
func (a *Applier) Delete(ctx context.Context, app App) error {
	rec, err := a.record(ctx, app)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range deletionOrder(rec.objects) {
		if err := a.delete(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	// What an interrupted release may have applied goes too, where it is
	// the application's.
	_, _, pendingErrs := a.prunePending(ctx, app, rec.pending, rec.objects, nil, nil, a.delete)
	errs = append(errs, pendingErrs...)
	if len(errs) > 0 {
		// The inventory stays: the next try deletes what is left.
		return errors.Join(errs...)
	}
	err = a.cs.CoreV1().ConfigMaps(InventoryNamespace).Delete(ctx, inventoryName(app), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete inventory of %s: %w", app, err)
	}
	return nil
}

// appLabels are the labels of everything the application puts in the cluster.
func appLabels(app App, release string) map[string]string {
	return map[string]string{
		LabelManagedBy:   ManagedByValue,
		LabelApplication: LabelValue(app.Name),
		LabelAppNS:       LabelValue(app.Namespace),
		LabelRelease:     LabelValue(release),
	}
}

// agentMade says whether an existing namespace is one the agent made for
// an application's objects (ensureNamespace): every application may name it.
func agentMade(ref Ref, obj *unstructured.Unstructured) bool {
	if ref.Group != "" || ref.Kind != "Namespace" {
		return false
	}
	fields := obj.GetManagedFields()
	return len(fields) > 0 && fields[0].Manager == FieldManager
}

// ownerOf says who an existing object belongs to, for a refusal.
func ownerOf(obj *unstructured.Unstructured) string {
	l := obj.GetLabels()
	if l[LabelManagedBy] == ManagedByValue {
		return "it is application " + l[LabelAppNS] + "/" + l[LabelApplication] + "'s"
	}
	for _, m := range obj.GetManagedFields() {
		if m.Operation == metav1.ManagedFieldsOperationApply || m.Operation == metav1.ManagedFieldsOperationUpdate {
			return "managed by " + m.Manager
		}
	}
	return "made outside Flotilla"
}
