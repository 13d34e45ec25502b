package apply

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flotilla-dev/flotilla/pkg/problem"
)

func TestInventoryName(t *testing.T) {
	long := strings.Repeat("a", 240)
	tests := []struct {
		name string
		app  App
		want string // empty: hashed (checked below)
	}{
		{"short names keep the name every inventory has had", App{Namespace: "demo", Name: "web"}, "inventory.demo.web"},
		{"253 characters fit", App{Namespace: "demo", Name: strings.Repeat("a", 253-len("inventory.demo."))}, "inventory.demo." + strings.Repeat("a", 253-len("inventory.demo."))},
		{"254 characters do not", App{Namespace: "demo", Name: strings.Repeat("a", 254-len("inventory.demo."))}, ""},
		{"longest namespace and name", App{Namespace: strings.Repeat("n", 63), Name: strings.Repeat("a", 253)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := inventoryName(tt.app)
			if tt.want != "" && got != tt.want {
				t.Errorf("inventoryName(%s) = %q, want %q", tt.app, got, tt.want)
			}
			if len(got) > 253 {
				t.Errorf("inventoryName(%s) has %d characters", tt.app, len(got))
			}
			if msgs := validation.IsDNS1123Subdomain(got); len(msgs) > 0 {
				t.Errorf("inventoryName(%s) = %q is not a ConfigMap name: %v", tt.app, got, msgs)
			}
			if got != inventoryName(tt.app) {
				t.Errorf("inventoryName(%s) is not stable", tt.app)
			}
		})
	}
	// Names that share their first 253 characters, or that differ only in
	// where namespace and name split, have inventories of their own.
	apps := []App{
		{Namespace: "demo", Name: long + "-one"}, {Namespace: "demo", Name: long + "-two"},
		{Namespace: "demo", Name: long}, {Namespace: "demo-" + "a", Name: long[1:]},
		{Namespace: "demo", Name: "a." + long}, {Namespace: "demo.a", Name: long},
	}
	seen := map[string]App{}
	for _, a := range apps {
		n := inventoryName(a)
		if other, dup := seen[n]; dup {
			t.Errorf("%s and %s share the inventory %q", a, other, n)
		}
		seen[n] = a
	}
}

func TestLabelValue(t *testing.T) {
	long := strings.Repeat("web-", 20)
	for _, tt := range []struct{ in, want string }{
		{"demo", "demo"},
		{"demo-v1", "demo-v1"},
		{strings.Repeat("a", 63), strings.Repeat("a", 63)},
	} {
		if got := LabelValue(tt.in); got != tt.want {
			t.Errorf("LabelValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	seen := map[string]string{}
	for _, in := range []string{strings.Repeat("a", 64), long + "one", long + "two", long + "a.b", long} {
		got := LabelValue(in)
		if msgs := validation.IsValidLabelValue(got); len(msgs) > 0 {
			t.Errorf("LabelValue(%q) = %q is not a label value: %v", in, got, msgs)
		}
		if !strings.HasPrefix(got, in[:40]) {
			t.Errorf("LabelValue(%q) = %q does not start like its name", in, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("%q and %q share the label value %q", in, other, got)
		}
		seen[got] = in
	}
}

// configMap is the ConfigMap an inventory object becomes in the cluster.
func configMap(t *testing.T, app App, release string, refs []Ref) *corev1.ConfigMap {
	t.Helper()
	u, err := inventoryObject(app, release, refs, nil, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "")
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, cm); err != nil {
		t.Fatal(err)
	}
	return cm
}

func TestInventoryRecordsItsApplication(t *testing.T) {
	refs := []Ref{
		{Version: "v1", Kind: "Namespace", Resource: "namespaces", Name: "extra"},
		{Group: "apps", Version: "v1", Kind: "Deployment", Resource: "deployments", Namespace: "demo", Name: "web"},
	}
	app := App{Namespace: "demo", Name: "web", UID: "uid-1"}
	longApp := App{Namespace: "demo", Name: strings.Repeat("a", 250) + "-one", UID: "uid-2"}
	twin := App{Namespace: "demo", Name: strings.Repeat("a", 250) + "-two", UID: "uid-3"}

	cm := configMap(t, app, "web-v3", refs)
	if cm.Name != "inventory.demo.web" || cm.Namespace != InventoryNamespace {
		t.Errorf("inventory is %s/%s", cm.Namespace, cm.Name)
	}
	wantLabels := map[string]string{LabelManagedBy: ManagedByValue, LabelApplication: "web", LabelAppNS: "demo", LabelRelease: "web-v3"}
	for k, v := range wantLabels {
		if cm.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cm.Labels[k], v)
		}
	}
	if cm.Data["namespace"] != "demo" || cm.Data["application"] != "web" || cm.Data["uid"] != "uid-1" || cm.Data["release"] != "web-v3" || cm.Data["updated"] != "2026-01-02T03:04:05Z" {
		t.Errorf("inventory data %v", cm.Data)
	}
	if owner := inventoryOwner(cm); owner != app {
		t.Errorf("owner = %+v, want %+v", owner, app)
	}
	got, err := decodeInventory(cm, app)
	if err != nil || !slices.Equal(got, refs) {
		t.Errorf("decodeInventory() = %v, %v; want %v", got, err, refs)
	}
	// Another UID is the same application created again: its inventory.
	if _, err := decodeInventory(cm, App{Namespace: "demo", Name: "web", UID: "uid-new"}); err != nil {
		t.Errorf("the inventory of an application created again: %v", err)
	}

	long := configMap(t, longApp, "v1", refs)
	if msgs := validation.IsValidLabelValue(long.Labels[LabelApplication]); len(msgs) > 0 {
		t.Errorf("label of a long name: %v", msgs)
	}
	if owner := inventoryOwner(long); owner != longApp {
		t.Errorf("owner of a long-named inventory = %+v, want %+v", owner, longApp)
	}
	if _, err := decodeInventory(long, longApp); err != nil {
		t.Errorf("decodeInventory() of a long name: %v", err)
	}

	// An inventory never passes for another application's.
	for _, other := range []App{{Namespace: "demo", Name: "api"}, {Namespace: "other", Name: "web"}, twin} {
		for _, c := range []*corev1.ConfigMap{cm, long} {
			c := c.DeepCopy()
			c.Name = inventoryName(other) // as if both names led to one ConfigMap
			_, err := decodeInventory(c, other)
			if !problem.Is(err, ReasonInventoryConflict) || !strings.Contains(err.Error(), other.String()) {
				t.Errorf("inventory of %s read for %s: %v, want %s", inventoryOwner(c), other, err, ReasonInventoryConflict)
			}
		}
	}

	// An inventory written before the data recorded the application: its labels say.
	old := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "inventory.demo.web", Namespace: InventoryNamespace,
			Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelApplication: "web", LabelAppNS: "demo", LabelRelease: "web-v1"}},
		Data: map[string]string{"objects": `[{"group":"apps","version":"v1","kind":"Deployment","resource":"deployments","namespace":"demo","name":"web"}]`, "uid": "uid-1", "release": "web-v1"},
	}
	if owner := inventoryOwner(old); owner != app {
		t.Errorf("owner of an older inventory = %+v, want %+v", owner, app)
	}
	if got, err := decodeInventory(old, app); err != nil || !slices.Equal(got, refs[1:]) {
		t.Errorf("decodeInventory() of an older inventory = %v, %v", got, err)
	}

	corrupt := cm.DeepCopy()
	corrupt.Data["objects"] = "{not json"
	if _, err := decodeInventory(corrupt, app); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("a corrupt inventory: %v", err)
	}
	empty := configMap(t, app, "web-v4", nil)
	if empty.Data["objects"] != "[]" {
		t.Errorf("an empty inventory records %q", empty.Data["objects"])
	}
}
