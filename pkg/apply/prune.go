package apply

import (
	"context"
	"slices"
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
