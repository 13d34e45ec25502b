package apply

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestPrune(t *testing.T) {
	cm := Ref{Version: "v1", Kind: "ConfigMap", Resource: "configmaps", Namespace: "demo", Name: "settings"}
	secret := Ref{Version: "v1", Kind: "Secret", Resource: "secrets", Namespace: "demo", Name: "token"}
	dep := Ref{Group: "apps", Version: "v1", Kind: "Deployment", Resource: "deployments", Namespace: "demo", Name: "web"}
	depOld := dep
	depOld.Version = "v1beta1"
	ns := Ref{Version: "v1", Kind: "Namespace", Resource: "namespaces", Name: "extra"}
	role := Ref{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole", Resource: "clusterroles", Name: "reader"}
	unresolved := func(r Ref) Ref { r.Resource = ""; return r }
	inNS := func(r Ref, ns string) Ref { r.Namespace = ns; return r }
	boom := errors.New("the server is currently unable to handle the request")

	tests := []struct {
		name          string
		prev, desired []Ref
		fail          map[Ref]error // deletions that fail
		wantInventory []Ref
		wantPruned    []Ref
		wantErrs      int
	}{
		{name: "first release: nothing to prune", desired: []Ref{cm, dep}, wantInventory: []Ref{cm, dep}},
		{name: "same objects: nothing pruned", prev: []Ref{cm, dep}, desired: []Ref{cm, dep}, wantInventory: []Ref{cm, dep}},
		{name: "dropped object pruned", prev: []Ref{cm, dep}, desired: []Ref{dep}, wantInventory: []Ref{dep}, wantPruned: []Ref{cm}},
		{name: "everything dropped", prev: []Ref{cm, dep}, wantPruned: []Ref{dep, cm}},
		{
			name: "another version of the same kind is the same object",
			prev: []Ref{depOld}, desired: []Ref{dep}, wantInventory: []Ref{dep},
		},
		{
			name: "same name, another kind, namespace or group is another object",
			prev: []Ref{inNS(cm, "other"), {Version: "v1", Kind: "Secret", Resource: "secrets", Namespace: "demo", Name: "settings"},
				{Group: "example.com", Version: "v1", Kind: "ConfigMap", Resource: "configmaps", Namespace: "demo", Name: "settings"}},
			desired:       []Ref{cm},
			wantInventory: []Ref{cm},
			wantPruned: []Ref{inNS(cm, "other"), {Version: "v1", Kind: "Secret", Resource: "secrets", Namespace: "demo", Name: "settings"},
				{Group: "example.com", Version: "v1", Kind: "ConfigMap", Resource: "configmaps", Namespace: "demo", Name: "settings"}},
		},
		{
			name: "a failed prune stays in the inventory to try again",
			prev: []Ref{cm, secret, dep}, desired: []Ref{dep}, fail: map[Ref]error{secret: boom},
			wantInventory: []Ref{dep, secret}, wantPruned: []Ref{cm}, wantErrs: 1,
		},
		{
			name: "pruned in deletion order",
			prev: []Ref{ns, cm, role, dep}, desired: nil,
			wantPruned: []Ref{dep, cm, role, ns},
		},
		{
			name: "an object whose kind did not resolve keeps its previous instance",
			prev: []Ref{cm, secret}, desired: []Ref{unresolved(cm)},
			wantInventory: []Ref{cm}, wantPruned: []Ref{secret},
		},
		{
			name: "an unresolved cluster-scoped kind keeps its previous instance",
			prev: []Ref{role}, desired: []Ref{inNS(unresolved(role), "demo")},
			wantInventory: []Ref{role},
		},
		{
			name: "an unresolved object never applied before is not recorded",
			prev: []Ref{cm}, desired: []Ref{cm, unresolved(secret)},
			wantInventory: []Ref{cm},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var deleted []Ref
			del := func(_ context.Context, r Ref) error {
				deleted = append(deleted, r)
				return tt.fail[r]
			}
			inventory, pruned, errs := prune(context.Background(), tt.prev, tt.desired, del)
			if !slices.Equal(inventory, tt.wantInventory) {
				t.Errorf("inventory = %v, want %v", inventory, tt.wantInventory)
			}
			if !slices.Equal(pruned, tt.wantPruned) {
				t.Errorf("pruned = %v, want %v", pruned, tt.wantPruned)
			}
			if len(errs) != tt.wantErrs {
				t.Errorf("errors = %v, want %d", errs, tt.wantErrs)
			}
			for _, err := range errs {
				if !errors.Is(err, boom) {
					t.Errorf("error %v is not the deletion's", err)
				}
			}
			for _, r := range deleted {
				if slices.ContainsFunc(tt.desired, r.Same) {
					t.Errorf("deleted %s, which the release still has", r)
				}
			}
		})
	}
}
