package apply

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// prune deletes (with del, in deletion order) what the previous inventory
// prev has and the release's objects desired do not. Another version of
// the same kind is the same object (Ref.Same): a release that moves a
// Deployment to another API version keeps it. A desired object whose kind
// the cluster's discovery did not resolve (no Resource: not served, or its
// group's discovery failed, which the RESTMapper reports alike) is still
// wanted: its previous instance is kept, never pruned on the strength of a
// discovery failure.
//
// prune returns the inventory to record next: the desired objects that
// resolved, the kept previous instances, and every stale object whose
// deletion failed, so that the next apply tries it again rather than
// forgetting it in the cluster.
func prune(ctx context.Context, prev, desired []Ref, del func(context.Context, Ref) error) (inventory, pruned []Ref, errs []error) {
	for _, d := range desired {
		if d.Resource != "" {
			inventory = append(inventory, d)
		}
	}
	var stale []Ref
	for _, old := range prev {
		i := slices.IndexFunc(desired, func(d Ref) bool { return wanted(d, old) })
		switch {
		case i < 0:
			stale = append(stale, old)
		case desired[i].Resource == "":
			inventory = append(inventory, old)
		}
	}
	for _, old := range deletionOrder(stale) {
		if err := del(ctx, old); err != nil {
			errs = append(errs, err)
			inventory = append(inventory, old)
			continue
		}
		pruned = append(pruned, old)
	}
	return inventory, pruned, errs
}

// wanted says whether the desired object d is the previously applied old.
// An unresolved d carries the application's namespace even if its kind is
// cluster-scoped (its scope is unknown): it matches old's cluster-scoped
// instance too.
func wanted(d, old Ref) bool {
	if d.Resource == "" && old.Namespace == "" {
		d.Namespace = ""
	}
	return d.Same(old)
}

// pendingOf is what the inventory is to hold as pending before a release
// of objs is applied: what it held already (an earlier release that was
// interrupted), and every object of the release the inventory does not
// record. grew says whether that is more than it held. Read-only objects
// are never written, nor objects in the agent's namespace (refused). The
// kinds the cluster's discovery does not resolve yet are unresolved: one
// that resolves once the release applied its definition is added to
// pending before its object is written.
func (a *Applier) pendingOf(app App, rec record, objs []*unstructured.Unstructured, readOnly []string) (pending []Ref, unresolved map[schema.GroupVersionKind]bool, grew bool) {
	pending = slices.Clone(rec.pending)
	unresolved = map[schema.GroupVersionKind]bool{}
	for _, obj := range objs {
		if Selects(readOnly, Ref{Kind: obj.GetKind()}) {
			continue
		}
		ref, err := a.Locate(app, obj)
		if err != nil {
			unresolved[obj.GroupVersionKind()] = true
			continue
		}
		if ref.Namespace == InventoryNamespace || slices.ContainsFunc(rec.objects, ref.Same) || slices.ContainsFunc(pending, ref.Same) {
			continue
		}
		pending, grew = append(pending, ref), true
	}
	return pending, unresolved, grew
}

// prunePending deletes (with del) what an interrupted release may have
// applied (pending) that neither the previous inventory prev (prune's
// part) nor the release's objects desired have, where the cluster shows
// the object is the application's: one the release was refused (someone
// else's) or that was never created is only forgotten. left is what
// stays pending: a desired object the cluster's discovery did not
// resolve, and what could not be read or deleted, tried again next time.
// What the release only reads (read) is released: neither pruned nor kept,
// as prune releases a read-only object an earlier release applied.
func (a *Applier) prunePending(ctx context.Context, app App, pending, prev, desired, read []Ref, del func(context.Context, Ref) error) (left, pruned []Ref, errs []error) {
	for _, p := range deletionOrder(pending) {
		if slices.ContainsFunc(prev, p.Same) || slices.ContainsFunc(read, p.Same) {
			continue
		}
		if i := slices.IndexFunc(desired, func(d Ref) bool { return wanted(d, p) }); i >= 0 {
			if desired[i].Resource == "" {
				left = append(left, p)
			}
			continue
		}
		live, err := a.Get(ctx, p)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			errs, left = append(errs, fmt.Errorf("read %s: %w", p, err)), append(left, p)
			continue
		case !owns(app, live):
			continue
		}
		if err := del(ctx, p); err != nil {
			errs, left = append(errs, err), append(left, p)
			continue
		}
		pruned = append(pruned, p)
	}
	return left, pruned, errs
}
