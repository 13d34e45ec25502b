package apply_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/apply/applytest"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// cluster is one managed cluster of the test bed, with the clients an
// applier needs; each subtest makes its own applier over them.
type cluster struct {
	dyn  dynamic.Interface
	cs   kubernetes.Interface
	disc discovery.DiscoveryInterface
}

// applier returns an applier whose writes go through faults and whose
// kinds resolve through mapper (a real discovery mapper that fails the
// kinds a test chooses).
func (c *cluster) applier() (*apply.Applier, *applytest.Dynamic, *mapper) {
	faults := applytest.NewDynamic(c.dyn)
	m := &mapper{ResettableRESTMapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.disc)), fail: map[schema.GroupKind]error{}}
	return apply.NewApplier(faults, c.cs, m, nil), faults, m
}

// mapper fails the kinds in fail as the cluster's discovery would.
type mapper struct {
	meta.ResettableRESTMapper
	mu   sync.Mutex
	fail map[schema.GroupKind]error
}

func (m *mapper) failKind(gk schema.GroupKind, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[gk] = err
}

func (m *mapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m.mu.Lock()
	err := m.fail[gk]
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return m.ResettableRESTMapper.RESTMapping(gk, versions...)
}

func objects(t *testing.T, docs ...string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, d := range docs {
		data, err := yaml.YAMLToJSON([]byte(d))
		if err != nil {
			t.Fatalf("parse %q: %v", d, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			t.Fatalf("parse %q: %v", d, err)
		}
		out = append(out, u)
	}
	return out
}

func configMap(name string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {color: red}\n"
}

const (
	secret         = "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {token: s3cr3t}\n"
	service        = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n"
	serviceAccount = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n"
	role           = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reader}\nrules: [{apiGroups: [''], resources: [configmaps], verbs: [get]}]\n"
	lease          = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: lock}\nspec: {holderIdentity: web}\n"
	deployment     = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: nginx:1}]}
`
)

func namespace(name string) string {
	return "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + name + "}\n"
}

func kinds(outcomes []apply.Outcome) []string {
	var out []string
	for _, o := range outcomes {
		out = append(out, o.Ref.Kind)
	}
	return out
}

func refNames(refs []apply.Ref) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

func mustApply(t *testing.T, ctx context.Context, a *apply.Applier, app apply.App, release string, objs []*unstructured.Unstructured) *apply.Result {
	t.Helper()
	res, err := a.Apply(ctx, app, release, objs)
	if err != nil {
		t.Fatalf("apply %s of %s: %v", release, app, err)
	}
	for _, o := range res.Failed() {
		t.Errorf("apply %s of %s: %s failed: %v", release, app, o.Ref, o.Err)
	}
	return res
}

func inventory(t *testing.T, ctx context.Context, a *apply.Applier, app apply.App) []string {
	t.Helper()
	refs, err := a.Inventory(ctx, app)
	if err != nil {
		t.Fatalf("inventory of %s: %v", app, err)
	}
	return refNames(refs)
}

func (c *cluster) exists(t *testing.T, ctx context.Context, gvr schema.GroupVersionResource, ns, name string) bool {
	t.Helper()
	var err error
	if ns == "" {
		_, err = c.dyn.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
	} else {
		_, err = c.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", gvr.Resource, ns, name, err)
	}
	return true
}

var (
	configMaps   = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	secrets      = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	services     = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	deployments  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	namespaces   = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	clusterRoles = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}
)

// The applier against a real API server: one test bed, a namespace per case.
func TestApplier(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{Clusters: []string{"c1"}})
	cfg := env.Cluster("c1").Config
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{dyn: dyn, cs: cs, disc: cs.Discovery()}
	t.Run("AppliesInDependencyOrder", c.testAppliesInDependencyOrder)
	t.Run("NoPruneAfterAFailedDiscovery", c.testNoPruneAfterAFailedDiscovery)
	t.Run("FailedPruneIsRetried", c.testFailedPruneIsRetried)
	t.Run("PartialFailureKeepsThePreviousRelease", c.testPartialFailureKeepsThePreviousRelease)
	t.Run("KilledBeforeItsInventoryIsSaved", c.testKilledBeforeItsInventoryIsSaved)
	t.Run("DeletionRetriesInReverseOrder", c.testDeletionRetriesInReverseOrder)
	t.Run("ClusterScopedObjects", c.testClusterScopedObjects)
	t.Run("LongNamesKeepTheirOwnInventories", c.testLongNamesKeepTheirOwnInventories)
	t.Run("ForeignInventoryIsNotTrusted", c.testForeignInventoryIsNotTrusted)
	t.Run("NothingIsTakenOverUnawares", c.testNothingIsTakenOverUnawares)
	t.Run("TheAgentsNamespaceIsNotWritable", c.testTheAgentsNamespaceIsNotWritable)
	t.Run("ReadOnlyObjectsAreOnlyRead", c.testReadOnlyObjectsAreOnlyRead)
}

// KubeVela's read-only policy: the selected objects are read, for health,
// and never written: one that exists stays as the cluster has it, one that
// does not is a failure saying so (not created), and one an earlier
// release applied is released, neither pruned nor deleted with the
// application.
func (c *cluster) testReadOnlyObjectsAreOnlyRead(t *testing.T) {
	ctx := context60(t)
	a, _, _ := c.applier()
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "readonly"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.CoreV1().ConfigMaps("readonly").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "platform"}, Data: map[string]string{"color": "blue"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	app := apply.App{Namespace: "readonly", Name: "web", UID: "uid-readonly"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, service))

	res, err := a.Apply(ctx, app, "web-v2", objects(t, configMap("platform"), configMap("absent"), service), apply.ReadOnly("ConfigMap", "Service"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]apply.Outcome{}
	for _, o := range res.Objects {
		byName[o.Ref.Name] = o
	}
	if o := byName["platform"]; o.Err != nil || !o.ReadOnly || o.Object == nil || o.Object.GetLabels()[apply.LabelManagedBy] != "" {
		t.Errorf("platform: %+v, want read as the cluster has it", o)
	}
	if o := byName["absent"]; !problem.Is(o.Err, apply.ReasonReadOnlyNotFound) || !strings.Contains(o.Err.Error(), "never creates it") {
		t.Errorf("absent: %v, want %s", o.Err, apply.ReasonReadOnlyNotFound)
	}
	cm, err := c.cs.CoreV1().ConfigMaps("readonly").Get(ctx, "platform", metav1.GetOptions{})
	if err != nil || cm.Data["color"] != "blue" || cm.Labels[apply.LabelManagedBy] != "" {
		t.Errorf("the read-only ConfigMap was written: %+v, %v", cm, err)
	}
	if c.exists(t, ctx, configMaps, "readonly", "absent") {
		t.Error("a read-only object that did not exist was created")
	}
	// The Service web-v1 applied is released, not pruned, though web-v3 drops it.
	if got := inventory(t, ctx, a, app); len(got) != 0 {
		t.Errorf("inventory %v, want nothing: what is read-only is not the application's", got)
	}
	mustApply(t, ctx, a, app, "web-v3", objects(t, configMap("settings")))
	if err := a.Delete(ctx, app); err != nil {
		t.Fatal(err)
	}
	if !c.exists(t, ctx, schema.GroupVersionResource{Version: "v1", Resource: "services"}, "readonly", "web") {
		t.Error("the released Service was deleted")
	}
	if c.exists(t, ctx, configMaps, "readonly", "settings") {
		t.Error("the application's own ConfigMap outlived it")
	}
}

// An object that exists and is not the application's (a cluster's own, or
// another application's) is refused with the reason and left as it is,
// while the rest of the release applies; a take-over policy adopts it.
func (c *cluster) testNothingIsTakenOverUnawares(t *testing.T) {
	ctx := context60(t)
	a, _, _ := c.applier()
	// The cluster's own DNS configuration, say, and another application's object.
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "owned"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.CoreV1().ConfigMaps("owned").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"}, Data: map[string]string{"Corefile": ".:53"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := apply.App{Namespace: "owned", Name: "other", UID: "uid-other"}
	mustApply(t, ctx, a, other, "other-v1", objects(t, configMap("shared")))

	app := apply.App{Namespace: "owned", Name: "web", UID: "uid-web"}
	coredns := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns}\ndata: {Corefile: hijacked}\n"
	res, err := a.Apply(ctx, app, "web-v1", objects(t, coredns, configMap("shared"), configMap("mine")))
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{}
	for _, o := range res.Objects {
		if o.Err != nil {
			p, _ := problem.As(o.Err)
			if p == nil || p.Reason != apply.ReasonNotOwned {
				t.Errorf("%s: %v, want %s", o.Ref, o.Err, apply.ReasonNotOwned)
				continue
			}
			refused[o.Ref.Name] = p.Message
		}
	}
	if len(refused) != 2 || !strings.Contains(refused["coredns"], "made outside Flotilla") && !strings.Contains(refused["coredns"], "managed by") ||
		!strings.Contains(refused["shared"], "application owned/other") {
		t.Fatalf("refused %v; want coredns (the cluster's) and shared (owned/other's), each saying whose", refused)
	}
	dns, err := c.cs.CoreV1().ConfigMaps("owned").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil || dns.Data["Corefile"] != ".:53" || dns.Labels[apply.LabelManagedBy] != "" {
		t.Errorf("the cluster's ConfigMap was changed: %+v, %v", dns, err)
	}
	if !c.exists(t, ctx, configMaps, "owned", "mine") {
		t.Error("the rest of the release was not applied")
	}
	// Not in the inventory: a later release of web must not prune them.
	refs, err := a.Inventory(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		if r.Name == "coredns" || r.Name == "shared" {
			t.Errorf("the inventory of web records %s, which it does not own", r)
		}
	}
	// KubeVela's take-over policy (for ConfigMaps) adopts the cluster's.
	res, err = a.Apply(ctx, app, "web-v2", objects(t, coredns, configMap("mine")), apply.TakeOver("ConfigMap"))
	if err != nil || len(res.Failed()) != 0 {
		t.Fatalf("apply with take-over: %v, failed %v", err, res.Failed())
	}
	if dns, err := c.cs.CoreV1().ConfigMaps("owned").Get(ctx, "coredns", metav1.GetOptions{}); err != nil || dns.Data["Corefile"] != "hijacked" {
		t.Errorf("taken over: %+v, %v", dns, err)
	}
}

// The agent's own namespace (its inventories) is never an application's.
func (c *cluster) testTheAgentsNamespaceIsNotWritable(t *testing.T) {
	ctx := context60(t)
	a, _, _ := c.applier()
	app := apply.App{Namespace: "intruder", Name: "web", UID: "uid-intruder"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, configMap("settings")))
	forged := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: inventory.intruder.web, namespace: " + apply.InventoryNamespace + "}\ndata: {objects: '[]'}\n"
	res, err := a.Apply(ctx, app, "web-v2", objects(t, forged, configMap("settings")), apply.TakeOver("*"))
	if err != nil {
		t.Fatal(err)
	}
	failed := res.Failed()
	if len(failed) != 1 || !problem.Is(failed[0].Err, apply.ReasonReservedNamespace) {
		t.Fatalf("failed %v, want the ConfigMap in %s refused as %s", failed, apply.InventoryNamespace, apply.ReasonReservedNamespace)
	}
	refs, err := a.Inventory(ctx, app)
	if err != nil || len(refs) != 1 || refs[0].Name != "settings" {
		t.Errorf("inventory after the forged one: %v, %v; want just settings", refs, err)
	}
}

func context60(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Objects given in any order reach the API server namespaces first,
// workloads after what they use, unknown kinds last: each write's
// resourceVersion (the server's one revision counter) is above the one
// before it.
func (c *cluster) testAppliesInDependencyOrder(t *testing.T) {
	ctx := context60(t)
	a, faults, _ := c.applier()
	app := apply.App{Namespace: "order", Name: "web", UID: "uid-order"}
	objs := objects(t, lease, deployment, service, configMap("settings"), secret, role, serviceAccount, namespace("order-extra"))
	var given []string
	for _, o := range objs {
		given = append(given, o.GetKind())
	}
	res := mustApply(t, ctx, a, app, "web-v1", objs)
	want := []string{"Namespace", "ServiceAccount", "Role", "ConfigMap", "Secret", "Service", "Deployment", "Lease"}
	if got := kinds(res.Objects); !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v", got, want)
	}
	var after []string
	for _, o := range objs {
		after = append(after, o.GetKind())
	}
	if !slices.Equal(after, given) {
		t.Errorf("Apply reordered the caller's objects: %v", after)
	}
	var last uint64
	for _, o := range res.Objects {
		if o.Object == nil {
			t.Fatalf("%s: no object returned", o.Ref)
		}
		rv, err := strconv.ParseUint(o.Object.GetResourceVersion(), 10, 64)
		if err != nil {
			t.Fatalf("%s: resourceVersion %q: %v", o.Ref, o.Object.GetResourceVersion(), err)
		}
		if rv <= last {
			t.Errorf("%s written at revision %d, not after the object before it (%d)", o.Ref, rv, last)
		}
		last = rv
		labels := o.Object.GetLabels()
		if labels[apply.LabelManagedBy] != apply.ManagedByValue || labels[apply.LabelApplication] != "web" || labels[apply.LabelAppNS] != "order" || labels[apply.LabelRelease] != "web-v1" {
			t.Errorf("%s labels %v", o.Ref, labels)
		}
	}
	// The writes as they left for the server: the inventory's intent (what
	// the release may put in the cluster), the objects in order, then the
	// inventory.
	var writes []string
	for _, call := range faults.Calls(applytest.Call{Verb: applytest.VerbApply}) {
		writes = append(writes, call.Resource)
	}
	wantWrites := []string{"configmaps", "namespaces", "serviceaccounts", "roles", "configmaps", "secrets", "services", "deployments", "leases", "configmaps"}
	if !slices.Equal(writes, wantWrites) {
		t.Errorf("server-side applies %v, want %v", writes, wantWrites)
	}
	if got := inventory(t, ctx, a, app); len(got) != len(want) {
		t.Errorf("inventory %v, want the %d objects", got, len(want))
	}
}

// A kind the cluster's discovery cannot resolve never prunes what the
// release still has: a failing discovery aborts the apply before pruning,
// and a kind reported not served fails alone while its previous instance
// stays in the cluster and in the inventory.
func (c *cluster) testNoPruneAfterAFailedDiscovery(t *testing.T) {
	ctx := context60(t)
	a, _, m := c.applier()
	app := apply.App{Namespace: "discovery", Name: "web", UID: "uid-discovery"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, configMap("settings"), secret))
	before := inventory(t, ctx, a, app)

	secretKind := schema.GroupKind{Kind: "Secret"}
	m.failKind(secretKind, errors.New("unable to retrieve the complete list of server APIs: the server is currently unable to handle the request"))
	res, err := a.Apply(ctx, app, "web-v2", objects(t, configMap("other"), secret))
	if err == nil {
		t.Fatalf("apply with discovery failing succeeded: %+v", res)
	}
	if !c.exists(t, ctx, secrets, "discovery", "token") || !c.exists(t, ctx, configMaps, "discovery", "settings") {
		t.Error("an apply whose discovery failed pruned the previous release's objects")
	}
	if got := inventory(t, ctx, a, app); !slices.Equal(got, before) {
		t.Errorf("inventory after a failed discovery %v, want it untouched %v", got, before)
	}

	m.failKind(secretKind, &meta.NoKindMatchError{GroupKind: secretKind, SearchedVersions: []string{"v1"}})
	res, err = a.Apply(ctx, app, "web-v3", objects(t, configMap("other"), secret))
	if err != nil {
		t.Fatal(err)
	}
	failed := res.Failed()
	if len(failed) != 1 || failed[0].Ref.Kind != "Secret" || !strings.Contains(failed[0].Err.Error(), "not served") {
		t.Errorf("failures %+v, want the Secret's kind not served", failed)
	}
	if !c.exists(t, ctx, secrets, "discovery", "token") {
		t.Error("the Secret the release still has was pruned because its kind did not resolve")
	}
	// Applied in part: what it dropped stays until a release applies in full.
	if !c.exists(t, ctx, configMaps, "discovery", "settings") || res.PruneDeferred != 1 {
		t.Errorf("a release applied in part pruned what it dropped (deferred %d)", res.PruneDeferred)
	}
	if got, want := inventory(t, ctx, a, app), []string{"ConfigMap discovery/other", "ConfigMap discovery/settings", "Secret discovery/token"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
	m.failKind(secretKind, nil)
	if _, err := a.Apply(ctx, app, "web-v4", objects(t, configMap("other"), secret)); err != nil {
		t.Fatal(err)
	}
	if c.exists(t, ctx, configMaps, "discovery", "settings") {
		t.Error("the ConfigMap dropped was not pruned once a release applied in full")
	}
	if got, want := inventory(t, ctx, a, app), []string{"ConfigMap discovery/other", "Secret discovery/token"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
}

// A release the cluster refuses in part: the objects it applies are
// applied, the refused one fails naming itself, and nothing the previous
// release had is pruned; the next release that applies in full prunes it.
func (c *cluster) testPartialFailureKeepsThePreviousRelease(t *testing.T) {
	ctx := context60(t)
	a, faults, _ := c.applier()
	app := apply.App{Namespace: "partial", Name: "web", UID: "uid-partial"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, configMap("settings"), configMap("dropped")))
	faults.Fail(applytest.Call{Verb: applytest.VerbApply, Resource: "configmaps", Name: "refused"}, 1,
		apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "refused", errors.New("admission webhook denied the request")))
	res, err := a.Apply(ctx, app, "web-v2", objects(t, configMap("settings"), configMap("refused")))
	if err != nil {
		t.Fatal(err)
	}
	failed := res.Failed()
	if len(failed) != 1 || failed[0].Ref.Name != "refused" || !strings.Contains(failed[0].Err.Error(), "denied") {
		t.Fatalf("failures %+v, want the refused ConfigMap's", failed)
	}
	if len(res.Pruned) > 0 || !c.exists(t, ctx, configMaps, "partial", "dropped") {
		t.Errorf("a release applied in part pruned %v", refNames(res.Pruned))
	}
	res = mustApply(t, ctx, a, app, "web-v3", objects(t, configMap("settings"), configMap("refused")))
	if got := refNames(res.Pruned); !slices.Equal(got, []string{"ConfigMap partial/dropped"}) {
		t.Errorf("the release applied in full pruned %v, want the dropped ConfigMap", got)
	}
	if got, want := inventory(t, ctx, a, app), []string{"ConfigMap partial/refused", "ConfigMap partial/settings"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
}

// An agent killed after applying a release's new object and before it
// recorded the release's inventory, restarted, then given a newer release
// without that object (the work stream keeps only the newest message per
// cluster and application, so the interrupted release never comes back):
// the newer release prunes it. Someone else's object the interrupted
// release named (refused, never written) is left alone, and so is the
// application's removal of what is left.
func (c *cluster) testKilledBeforeItsInventoryIsSaved(t *testing.T) {
	ctx := context60(t)
	a, faults, _ := c.applier()
	app := apply.App{Namespace: "killed", Name: "web", UID: "uid-killed"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, configMap("settings")))
	if _, err := c.cs.CoreV1().ConfigMaps("killed").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	faults.KillAfter(applytest.Call{Verb: applytest.VerbApply, Resource: "configmaps", Namespace: "killed", Name: "extra"})
	if _, err := a.Apply(ctx, app, "web-v2", objects(t, configMap("settings"), configMap("extra"), configMap("foreign"))); !errors.Is(err, applytest.ErrKilled) {
		t.Fatalf("apply of web-v2 while killed: %v, want it cut short", err)
	}
	if !faults.Killed() || !c.exists(t, ctx, configMaps, "killed", "extra") {
		t.Fatal("the kill did not come after the new object was applied")
	}

	restarted, _, _ := c.applier()
	res := mustApply(t, ctx, restarted, app, "web-v3", objects(t, configMap("settings")))
	if got := refNames(res.Pruned); !slices.Equal(got, []string{"ConfigMap killed/extra"}) {
		t.Errorf("web-v3 pruned %v, want what the interrupted release applied", got)
	}
	if c.exists(t, ctx, configMaps, "killed", "extra") {
		t.Error("the interrupted release's object outlived the release that dropped it")
	}
	if !c.exists(t, ctx, configMaps, "killed", "foreign") {
		t.Error("someone else's ConfigMap, refused to the interrupted release, was pruned")
	}
	cm, err := c.cs.CoreV1().ConfigMaps(apply.InventoryNamespace).Get(ctx, "inventory.killed.web", metav1.GetOptions{})
	if err != nil || cm.Data["pending"] != "" {
		t.Errorf("inventory after a release applied in full still holds pending objects: %v, %v", cm.Data, err)
	}

	// Killed after applying an object the next release only reads: it is
	// released, not pruned (as a read-only object an earlier release
	// applied in full is).
	a2, faults2, _ := c.applier()
	faults2.KillAfter(applytest.Call{Verb: applytest.VerbApply, Resource: "configmaps", Namespace: "killed", Name: "shared"})
	if _, err := a2.Apply(ctx, app, "web-v3b", objects(t, configMap("settings"), configMap("shared"))); !errors.Is(err, applytest.ErrKilled) {
		t.Fatalf("apply of web-v3b while killed: %v, want it cut short", err)
	}
	readingIt, _, _ := c.applier()
	if _, err := readingIt.Apply(ctx, app, "web-v3c", objects(t, configMap("settings"), configMap("shared")), apply.ReadOnly("ConfigMap")); err != nil {
		t.Fatal(err)
	}
	if !c.exists(t, ctx, configMaps, "killed", "shared") {
		t.Error("an object the next release only reads was pruned")
	}
	mustApply(t, ctx, readingIt, app, "web-v3d", objects(t, configMap("settings")))
	if !c.exists(t, ctx, configMaps, "killed", "shared") {
		t.Error("an object released to a read-only policy was pruned later")
	}

	// Killed again mid-release, then the application removed: what the
	// interrupted release applied goes with it.
	a3, faults3, _ := c.applier()
	faults3.KillAfter(applytest.Call{Verb: applytest.VerbApply, Resource: "configmaps", Namespace: "killed", Name: "late"})
	if _, err := a3.Apply(ctx, app, "web-v4", objects(t, configMap("settings"), configMap("late"))); !errors.Is(err, applytest.ErrKilled) {
		t.Fatalf("apply of web-v4 while killed: %v, want it cut short", err)
	}
	removing, _, _ := c.applier()
	if err := removing.Delete(ctx, app); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"settings", "late"} {
		if c.exists(t, ctx, configMaps, "killed", name) {
			t.Errorf("ConfigMap %s outlived the application's removal", name)
		}
	}
	if !c.exists(t, ctx, configMaps, "killed", "foreign") {
		t.Error("someone else's ConfigMap went with the application")
	}
}

// An object the release dropped whose deletion fails stays in the
// inventory, and the next apply deletes it.
func (c *cluster) testFailedPruneIsRetried(t *testing.T) {
	ctx := context60(t)
	a, faults, _ := c.applier()
	app := apply.App{Namespace: "reprune", Name: "web", UID: "uid-reprune"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, configMap("settings"), configMap("dropped"), secret))
	fault := faults.Fail(applytest.Call{Verb: applytest.VerbDelete, Resource: "configmaps", Name: "dropped"}, 1,
		apierrors.NewServiceUnavailable("etcd is busy"))
	res := mustApply(t, ctx, a, app, "web-v2", objects(t, configMap("settings")))
	if fault.Hits() != 1 || len(res.PruneErrs) != 1 || !strings.Contains(res.PruneErrs[0].Error(), "ConfigMap reprune/dropped") {
		t.Fatalf("prune errors %v (fault hit %d times), want the dropped ConfigMap's", res.PruneErrs, fault.Hits())
	}
	if got := refNames(res.Pruned); !slices.Equal(got, []string{"Secret reprune/token"}) {
		t.Errorf("pruned %v, want the Secret", got)
	}
	if got, want := inventory(t, ctx, a, app), []string{"ConfigMap reprune/dropped", "ConfigMap reprune/settings"}; !slices.Equal(got, want) {
		t.Errorf("inventory after a failed prune %v, want %v", got, want)
	}
	res = mustApply(t, ctx, a, app, "web-v3", objects(t, configMap("settings")))
	if got := refNames(res.Pruned); !slices.Equal(got, []string{"ConfigMap reprune/dropped"}) || len(res.PruneErrs) > 0 {
		t.Errorf("second try pruned %v (errors %v), want the dropped ConfigMap", got, res.PruneErrs)
	}
	if c.exists(t, ctx, configMaps, "reprune", "dropped") {
		t.Error("the dropped ConfigMap is still there")
	}
	if got, want := inventory(t, ctx, a, app), []string{"ConfigMap reprune/settings"}; !slices.Equal(got, want) {
		t.Errorf("inventory %v, want %v", got, want)
	}
}

// Deleting an application removes its objects in the reverse of the apply
// order; when one cannot be deleted the inventory stays, and deleting again
// finishes.
func (c *cluster) testDeletionRetriesInReverseOrder(t *testing.T) {
	ctx := context60(t)
	a, faults, _ := c.applier()
	app := apply.App{Namespace: "removal", Name: "web", UID: "uid-removal"}
	mustApply(t, ctx, a, app, "web-v1", objects(t, namespace("removal-extra"), deployment, configMap("settings"), service, serviceAccount))
	fault := faults.Fail(applytest.Call{Verb: applytest.VerbDelete, Resource: "services", Name: "web"}, 1, apierrors.NewTooManyRequests("slow down", 1))

	err := a.Delete(ctx, app)
	if err == nil || !strings.Contains(err.Error(), "Service removal/web") || fault.Hits() != 1 {
		t.Fatalf("Delete with the Service's deletion failing: %v (fault hit %d times)", err, fault.Hits())
	}
	var order []string
	for _, call := range faults.Calls(applytest.Call{Verb: applytest.VerbDelete}) {
		order = append(order, call.Resource)
	}
	if want := []string{"deployments", "services", "configmaps", "serviceaccounts", "namespaces"}; !slices.Equal(order, want) {
		t.Errorf("deleted %v, want %v", order, want)
	}
	if !c.exists(t, ctx, services, "removal", "web") {
		t.Fatal("the Service whose deletion failed is gone")
	}
	if c.exists(t, ctx, deployments, "removal", "web") || c.exists(t, ctx, configMaps, "removal", "settings") {
		t.Error("a failed deletion stopped the others")
	}
	if got := inventory(t, ctx, a, app); len(got) != 5 {
		t.Errorf("inventory after a failed deletion %v, want it kept", got)
	}

	if err := a.Delete(ctx, app); err != nil {
		t.Fatalf("Delete again: %v", err)
	}
	if c.exists(t, ctx, services, "removal", "web") {
		t.Error("the Service is still there after deleting again")
	}
	if got, err := a.Inventory(ctx, app); err != nil || got != nil {
		t.Errorf("inventory after deletion: %v, %v; want none", got, err)
	}
	eventually.True(t, 30*time.Second, "namespace removal-extra deleted", func() (bool, error) {
		ns, err := c.cs.CoreV1().Namespaces().Get(ctx, "removal-extra", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return ns.DeletionTimestamp != nil, nil
	})
}

// A cluster-scoped object loses the namespace it was given and is recorded
// without one; pruning it works the same.
func (c *cluster) testClusterScopedObjects(t *testing.T) {
	ctx := context60(t)
	a, _, _ := c.applier()
	app := apply.App{Namespace: "scoped", Name: "web", UID: "uid-scoped"}
	clusterRole := "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: flotilla-scoped-reader, namespace: scoped}\nrules: [{apiGroups: [''], resources: [pods], verbs: [get]}]\n"
	res := mustApply(t, ctx, a, app, "web-v1", objects(t, clusterRole, namespace("scoped-extra"), configMap("settings")))
	for _, o := range res.Objects {
		switch o.Ref.Kind {
		case "ClusterRole", "Namespace":
			if o.Ref.Namespace != "" || (o.Object != nil && o.Object.GetNamespace() != "") {
				t.Errorf("%s keeps a namespace: ref %q, object %q", o.Ref, o.Ref.Namespace, o.Object.GetNamespace())
			}
		case "ConfigMap":
			if o.Ref.Namespace != "scoped" {
				t.Errorf("%s is in %q, want the application's namespace", o.Ref, o.Ref.Namespace)
			}
		}
	}
	if !c.exists(t, ctx, clusterRoles, "", "flotilla-scoped-reader") || !c.exists(t, ctx, namespaces, "", "scoped-extra") {
		t.Fatal("the cluster-scoped objects are not in the cluster")
	}
	refs, err := a.Inventory(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		if (r.Kind == "ClusterRole" || r.Kind == "Namespace") && r.Namespace != "" {
			t.Errorf("inventory records %s in namespace %q", r, r.Namespace)
		}
	}
	res = mustApply(t, ctx, a, app, "web-v2", objects(t, configMap("settings")))
	if got, want := refNames(res.Pruned), []string{"ClusterRole flotilla-scoped-reader", "Namespace scoped-extra"}; !slices.Equal(got, want) {
		t.Errorf("pruned %v, want %v", got, want)
	}
	if c.exists(t, ctx, clusterRoles, "", "flotilla-scoped-reader") {
		t.Error("the dropped ClusterRole is still there")
	}
}

// Two applications whose names share their first 253 characters (an
// Application's name may be that long) each keep their own inventory: the
// second's apply does not prune the first's objects, nor its deletion them.
func (c *cluster) testLongNamesKeepTheirOwnInventories(t *testing.T) {
	ctx := context60(t)
	a, _, _ := c.applier()
	long := strings.Repeat("a", 245)
	one := apply.App{Namespace: "long", Name: long + "-one", UID: "uid-one"}
	two := apply.App{Namespace: "long", Name: long + "-two", UID: "uid-two"}
	mustApply(t, ctx, a, one, "v1", objects(t, configMap("one")))
	mustApply(t, ctx, a, two, "v1", objects(t, configMap("two")))
	if !c.exists(t, ctx, configMaps, "long", "one") {
		t.Fatal("applying the second application pruned the first's ConfigMap")
	}
	if got := inventory(t, ctx, a, one); !slices.Equal(got, []string{"ConfigMap long/one"}) {
		t.Errorf("inventory of the first %v", got)
	}
	if got := inventory(t, ctx, a, two); !slices.Equal(got, []string{"ConfigMap long/two"}) {
		t.Errorf("inventory of the second %v", got)
	}
	cm, err := c.cs.CoreV1().ConfigMaps("long").Get(ctx, "one", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.cs.CoreV1().ConfigMaps("long").Get(ctx, "two", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l1, l2 := cm.Labels[apply.LabelApplication], other.Labels[apply.LabelApplication]
	if l1 == l2 || len(validation.IsValidLabelValue(l1)) > 0 || l1 != apply.LabelValue(one.Name) {
		t.Errorf("application labels %q and %q, want two valid and distinct values", l1, l2)
	}
	invs, err := a.Inventories(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := invs[one]; !ok {
		t.Errorf("Inventories() lacks %s: %v", one, invs)
	}
	if _, ok := invs[two]; !ok {
		t.Errorf("Inventories() lacks %s: %v", two, invs)
	}
	if err := a.Delete(ctx, two); err != nil {
		t.Fatal(err)
	}
	if !c.exists(t, ctx, configMaps, "long", "one") || c.exists(t, ctx, configMaps, "long", "two") {
		t.Error("deleting the second application did not remove exactly its own ConfigMap")
	}
	if got := inventory(t, ctx, a, one); !slices.Equal(got, []string{"ConfigMap long/one"}) {
		t.Errorf("inventory of the first after deleting the second %v", got)
	}
}

// An inventory under an application's name that records another
// application is never used: applying or deleting fails with
// InventoryConflict, nothing is applied or deleted, the inventory stays.
func (c *cluster) testForeignInventoryIsNotTrusted(t *testing.T) {
	ctx := context60(t)
	a, faults, _ := c.applier()
	other := apply.App{Namespace: "foreign", Name: "other", UID: "uid-other"}
	mustApply(t, ctx, a, other, "other-v1", objects(t, configMap("keep")))
	app := apply.App{Namespace: "foreign", Name: "web", UID: "uid-web"}
	// As if both names led to one ConfigMap: the other's inventory, under this one's name.
	inv, err := c.cs.CoreV1().ConfigMaps(apply.InventoryNamespace).Get(ctx, "inventory.foreign.other", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv = inv.DeepCopy()
	inv.ObjectMeta = metav1.ObjectMeta{Name: "inventory.foreign.web", Namespace: apply.InventoryNamespace}
	if _, err := c.cs.CoreV1().ConfigMaps(apply.InventoryNamespace).Create(ctx, inv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	writes := len(faults.Calls(applytest.Call{}))
	_, err = a.Apply(ctx, app, "web-v1", objects(t, configMap("settings")))
	if !problem.Is(err, apply.ReasonInventoryConflict) || !strings.Contains(err.Error(), "foreign/other") {
		t.Fatalf("apply over another application's inventory: %v, want %s naming it", err, apply.ReasonInventoryConflict)
	}
	if err := a.Delete(ctx, app); !problem.Is(err, apply.ReasonInventoryConflict) {
		t.Errorf("delete over another application's inventory: %v, want %s", err, apply.ReasonInventoryConflict)
	}
	if got := faults.Calls(applytest.Call{}); len(got) != writes {
		t.Errorf("writes after the conflict: %v", got[writes:])
	}
	if !c.exists(t, ctx, configMaps, "foreign", "keep") || c.exists(t, ctx, configMaps, "foreign", "settings") {
		t.Error("a conflicting inventory led to pruning or applying")
	}
	if !c.exists(t, ctx, configMaps, apply.InventoryNamespace, "inventory.foreign.web") {
		t.Error("the conflicting inventory was deleted")
	}
}
