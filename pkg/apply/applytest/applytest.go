// Package applytest owns the fault injection that tests of package apply
// and of the agent use against a real API server: a dynamic client that
// passes every call through to the server, records the writes in order, and
// fails the calls a test chooses (a transient API error, say), so that
// retries and ordering can be observed without a fake cluster.
package applytest

import (
	"context"
	"errors"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Verbs of the calls Dynamic records and can fail.
const (
	VerbApply  = "apply"
	VerbCreate = "create"
	VerbUpdate = "update"
	VerbPatch  = "patch"
	VerbDelete = "delete"
)

// Call is one write through Dynamic. As a pattern (Dynamic.Fail), an empty
// field matches anything.
type Call struct {
	Verb      string
	Resource  string // e.g. "configmaps"
	Namespace string
	Name      string
}

func (c Call) matches(o Call) bool {
	return (c.Verb == "" || c.Verb == o.Verb) && (c.Resource == "" || c.Resource == o.Resource) &&
		(c.Namespace == "" || c.Namespace == o.Namespace) && (c.Name == "" || c.Name == o.Name)
}

// Fault fails the calls that match its pattern, a number of times.
type Fault struct {
	d       *Dynamic
	pattern Call
	err     error
	left    int
	hits    int
}

// Dynamic is a dynamic.Interface over a real one.
type Dynamic struct {
	inner dynamic.Interface

	mu     sync.Mutex
	faults []*Fault
	calls  []Call
	// killAfter, once a call matching it reached the server, fails every
	// later write (killed).
	killAfter *Call
	killed    bool
}

// ErrKilled fails the writes after KillAfter's call.
var ErrKilled = errors.New("applytest: the writer was killed")

// KillAfter simulates the writer killed right after the next write that
// matches pattern reached the server: that write goes through, every
// later one fails with ErrKilled (and never reaches the server).
func (d *Dynamic) KillAfter(pattern Call) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.killAfter, d.killed = &pattern, false
}

// Killed says whether KillAfter's write happened.
func (d *Dynamic) Killed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.killed
}

// NewDynamic wraps inner.
func NewDynamic(inner dynamic.Interface) *Dynamic { return &Dynamic{inner: inner} }

// Fail makes the next times calls that match pattern fail with err (without
// reaching the server).
func (d *Dynamic) Fail(pattern Call, times int, err error) *Fault {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := &Fault{d: d, pattern: pattern, err: err, left: times}
	d.faults = append(d.faults, f)
	return f
}

// Hits is how many calls f failed so far.
func (f *Fault) Hits() int {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	return f.hits
}

// Calls returns the writes so far that match pattern, in the order they
// were made (failed ones included).
func (d *Dynamic) Calls(pattern Call) []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Call
	for _, c := range d.calls {
		if pattern.matches(c) {
			out = append(out, c)
		}
	}
	return out
}

// record notes a write and says whether a fault fails it.
func (d *Dynamic) record(c Call) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, c)
	if d.killed {
		return ErrKilled
	}
	if d.killAfter != nil && d.killAfter.matches(c) {
		d.killed = true // this one still goes through
	}
	i := slices.IndexFunc(d.faults, func(f *Fault) bool { return f.left > 0 && f.pattern.matches(c) })
	if i < 0 {
		return nil
	}
	f := d.faults[i]
	f.left--
	f.hits++
	return f.err
}

// Resource implements dynamic.Interface.
func (d *Dynamic) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	nri := d.inner.Resource(gvr)
	return &resource{ResourceInterface: nri, d: d, gvr: gvr, nri: nri}
}

// resource passes reads through and records writes.
type resource struct {
	dynamic.ResourceInterface
	d   *Dynamic
	gvr schema.GroupVersionResource
	ns  string
	nri dynamic.NamespaceableResourceInterface // nil once namespaced
}

func (r *resource) Namespace(ns string) dynamic.ResourceInterface {
	return &resource{ResourceInterface: r.nri.Namespace(ns), d: r.d, gvr: r.gvr, ns: ns}
}

func (r *resource) call(verb, name string) error {
	return r.d.record(Call{Verb: verb, Resource: r.gvr.Resource, Namespace: r.ns, Name: name})
}

func (r *resource) Apply(ctx context.Context, name string, obj *unstructured.Unstructured, opts metav1.ApplyOptions, sub ...string) (*unstructured.Unstructured, error) {
	if err := r.call(VerbApply, name); err != nil {
		return nil, err
	}
	return r.ResourceInterface.Apply(ctx, name, obj, opts, sub...)
}

func (r *resource) Create(ctx context.Context, obj *unstructured.Unstructured, opts metav1.CreateOptions, sub ...string) (*unstructured.Unstructured, error) {
	if err := r.call(VerbCreate, obj.GetName()); err != nil {
		return nil, err
	}
	return r.ResourceInterface.Create(ctx, obj, opts, sub...)
}

func (r *resource) Update(ctx context.Context, obj *unstructured.Unstructured, opts metav1.UpdateOptions, sub ...string) (*unstructured.Unstructured, error) {
	if err := r.call(VerbUpdate, obj.GetName()); err != nil {
		return nil, err
	}
	return r.ResourceInterface.Update(ctx, obj, opts, sub...)
}

func (r *resource) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, sub ...string) (*unstructured.Unstructured, error) {
	if err := r.call(VerbPatch, name); err != nil {
		return nil, err
	}
	return r.ResourceInterface.Patch(ctx, name, pt, data, opts, sub...)
}

func (r *resource) Delete(ctx context.Context, name string, opts metav1.DeleteOptions, sub ...string) error {
	if err := r.call(VerbDelete, name); err != nil {
		return err
	}
	return r.ResourceInterface.Delete(ctx, name, opts, sub...)
}
