package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// Keys of an inventory ConfigMap's data. The application's namespace and
// name are recorded in full (its labels may hold only LabelValue of them):
// reading an inventory checks them, so one whose name two applications
// share is never taken for the other's.
const (
	inventoryObjects     = "objects"
	inventoryNamespace   = "namespace"
	inventoryApplication = "application"
	inventoryUID         = "uid"
	inventoryRelease     = "release"
	inventoryUpdated     = "updated"
	inventoryMark        = "mark"
	// inventoryPending are objects a release is about to apply that the
	// inventory does not yet record: written before the first of them is
	// applied, so that an agent killed mid-release (before it records the
	// release's inventory) still knows, after a restart, what it may have
	// put in the cluster, and the next release prunes what it dropped.
	inventoryPending = "pending"
)

// inventoryNameMax is the longest name a ConfigMap may have.
const inventoryNameMax = 253

// inventoryName is the name of the application's inventory ConfigMap:
// "inventory.<ns>.<app>" (namespaces are DNS labels, so the first dot
// separates namespace from name) when that fits in 253 characters, as every
// inventory written so far is named; else a prefix of it and a hash of the
// whole namespace/name, so that two applications whose names share a long
// prefix do not share an inventory.
func inventoryName(app App) string {
	name := "inventory." + app.Namespace + "." + app.Name
	if len(name) <= inventoryNameMax {
		return name
	}
	return hashed(name, app.Namespace+"/"+app.Name, inventoryNameMax)
}

// Inventory is what the application has in the cluster, as last recorded.
// An inventory that records another application is a problem with
// ReasonInventoryConflict.
func (a *Applier) Inventory(ctx context.Context, app App) ([]Ref, error) {
	r, err := a.record(ctx, app)
	return r.objects, err
}

// record is an application's inventory as stored: the objects its last
// release applied, those a release was about to apply (pending), the
// release and mark that last applied, and the UID of the application
// they were (empty: none recorded).
type record struct {
	objects, pending   []Ref
	release, mark, uid string
}

func (a *Applier) record(ctx context.Context, app App) (record, error) {
	cm, err := a.cs.CoreV1().ConfigMaps(InventoryNamespace).Get(ctx, inventoryName(app), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return record{}, nil
	}
	if err != nil {
		return record{}, fmt.Errorf("read inventory of %s: %w", app, err)
	}
	refs, err := decodeInventory(cm, app)
	if err != nil {
		return record{}, err
	}
	r := record{objects: refs, release: cm.Data[inventoryRelease], mark: cm.Data[inventoryMark], uid: cm.Data[inventoryUID]}
	if raw := cm.Data[inventoryPending]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &r.pending); err != nil {
			return record{}, fmt.Errorf("inventory %s of %s is corrupt: its pending objects: %w", cm.Name, app, err)
		}
	}
	return r, nil
}

// Inventories lists every application's inventory in the cluster. An
// inventory that cannot be read (corrupt, or in conflict) is left out and
// named in the error; the others are still returned.
func (a *Applier) Inventories(ctx context.Context) (map[App][]Ref, error) {
	list, err := a.cs.CoreV1().ConfigMaps(InventoryNamespace).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list inventories: %w", err)
	}
	out := map[App][]Ref{}
	var errs []error
	for i := range list.Items {
		cm := &list.Items[i]
		app := inventoryOwner(cm)
		refs, err := decodeInventory(cm, app)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[app] = refs
	}
	return out, errors.Join(errs...)
}

// inventoryOwner is the application an inventory records: from its data,
// or from its labels for an inventory written before the data held them
// (names short enough then to be label values).
func inventoryOwner(cm *corev1.ConfigMap) App {
	app := App{Namespace: cm.Data[inventoryNamespace], Name: cm.Data[inventoryApplication], UID: cm.Data[inventoryUID]}
	if app.Namespace == "" && app.Name == "" {
		app.Namespace, app.Name = cm.Labels[LabelAppNS], cm.Labels[LabelApplication]
	}
	return app
}

// decodeInventory reads the objects an inventory records for app. The UID
// is not compared: an application deleted and created again under the same
// name while the agent was away owns, in the cluster, what carries its
// name's labels, so its first release prunes what its predecessor left.
func decodeInventory(cm *corev1.ConfigMap, app App) ([]Ref, error) {
	if owner := inventoryOwner(cm); owner.Namespace != app.Namespace || owner.Name != app.Name || cm.Name != inventoryName(app) {
		return nil, problem.New(ReasonInventoryConflict, "inventory %s/%s records application %s, not %s: refusing to use it",
			cm.Namespace, cm.Name, owner, app)
	}
	var refs []Ref
	if err := json.Unmarshal([]byte(cm.Data[inventoryObjects]), &refs); err != nil {
		return nil, fmt.Errorf("inventory %s of %s is corrupt: %w", cm.Name, app, err)
	}
	return refs, nil
}

// inventoryObject is the inventory ConfigMap recording refs as what app's
// release put in the cluster, at now.
func inventoryObject(app App, release string, refs, pending []Ref, now time.Time, mark string) (*unstructured.Unstructured, error) {
	if refs == nil {
		refs = []Ref{}
	}
	data, err := json.Marshal(refs)
	if err != nil {
		return nil, fmt.Errorf("encode inventory of %s: %w", app, err)
	}
	var pendingData []byte
	if len(pending) > 0 {
		if pendingData, err = json.Marshal(pending); err != nil {
			return nil, fmt.Errorf("encode inventory of %s: %w", app, err)
		}
	}
	labels := map[string]any{}
	for k, v := range appLabels(app, release) {
		labels[k] = v
	}
	fields := map[string]any{
		inventoryObjects: string(data), inventoryNamespace: app.Namespace, inventoryApplication: app.Name,
		inventoryUID: app.UID, inventoryRelease: release, inventoryUpdated: now.UTC().Format(time.RFC3339),
	}
	if mark != "" {
		fields[inventoryMark] = mark
	}
	if pendingData != nil {
		fields[inventoryPending] = string(pendingData)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": inventoryName(app), "namespace": InventoryNamespace, "labels": labels},
		"data":     fields,
	}}, nil
}

// MarkOf reads the mark (Mark) the application's last apply recorded in
// its inventory, and the UID of the application it recorded ("" none).
func (a *Applier) MarkOf(ctx context.Context, app App) (mark, uid string, err error) {
	cm, err := a.cs.CoreV1().ConfigMaps(InventoryNamespace).Get(ctx, inventoryName(app), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read inventory of %s: %w", app, err)
	}
	if _, err := decodeInventory(cm, app); err != nil {
		return "", "", err
	}
	return cm.Data[inventoryMark], cm.Data[inventoryUID], nil
}

// saveInventory records what app's release applied, and what a release
// may have applied besides (pending). It is applied with force and owns
// every data key, so a key it leaves out (pending, once pruned) is removed.
func (a *Applier) saveInventory(ctx context.Context, app App, release string, refs, pending []Ref, mark string) error {
	if err := a.ensureNamespace(ctx, InventoryNamespace); err != nil {
		return err
	}
	cm, err := inventoryObject(app, release, refs, pending, time.Now(), mark)
	if err != nil {
		return err
	}
	_, err = a.dyn.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace(InventoryNamespace).
		Apply(ctx, cm.GetName(), cm, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("save inventory of %s: %w", app, err)
	}
	return nil
}
