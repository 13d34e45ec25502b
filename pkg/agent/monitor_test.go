package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
)

// An informer's handlers only put items on the queue: the monitor here has
// no agent and no clients, so any I/O would fail the test.
func TestInformerHandlersOnlyEnqueue(t *testing.T) {
	long := strings.Repeat("a", 100)
	demo := apply.App{Namespace: "demo", Name: "web", UID: "uid-1"}
	longApp := apply.App{Namespace: "demo", Name: long, UID: "uid-2"}
	deployments := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	configMaps := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	object := func(kind, app string, generation int64, rv string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("v1")
		u.SetKind(kind)
		u.SetNamespace("demo")
		u.SetName("x")
		u.SetGeneration(generation)
		u.SetResourceVersion(rv)
		if app != "" {
			u.SetLabels(map[string]string{apply.LabelAppNS: "demo", apply.LabelApplication: apply.LabelValue(app)})
		}
		return u
	}
	repair := func(app apply.App, gvr schema.GroupVersionResource, kind string) item {
		return item{app: app, object: apply.Ref{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource, Kind: kind, Namespace: "demo", Name: "x"}}
	}
	repairDeleted := func(app apply.App, gvr schema.GroupVersionResource, kind string) item {
		it := repair(app, gvr, kind)
		it.deleted = true
		return it
	}
	tests := []struct {
		name  string
		gvr   schema.GroupVersionResource
		event func(h cache.ResourceEventHandler)
		want  []item
	}{
		{"added: assess", deployments, func(h cache.ResourceEventHandler) { h.OnAdd(object("Deployment", "web", 1, "1"), false) }, []item{{app: demo}}},
		{"status changed: assess", deployments, func(h cache.ResourceEventHandler) {
			h.OnUpdate(object("Deployment", "web", 1, "1"), object("Deployment", "web", 1, "2"))
		}, []item{{app: demo}}},
		{"spec changed: repair", deployments, func(h cache.ResourceEventHandler) {
			h.OnUpdate(object("Deployment", "web", 1, "1"), object("Deployment", "web", 2, "2"))
		}, []item{repair(demo, deployments, "Deployment")}},
		{"content of a kind without generation changed: repair", configMaps, func(h cache.ResourceEventHandler) {
			h.OnUpdate(object("ConfigMap", "web", 0, "1"), object("ConfigMap", "web", 0, "2"))
		}, []item{repair(demo, configMaps, "ConfigMap")}},
		{"resync of a kind without generation: assess", configMaps, func(h cache.ResourceEventHandler) {
			h.OnUpdate(object("ConfigMap", "web", 0, "1"), object("ConfigMap", "web", 0, "1"))
		}, []item{{app: demo}}},
		{"deleted: repair", configMaps, func(h cache.ResourceEventHandler) { h.OnDelete(object("ConfigMap", "web", 0, "1")) },
			[]item{repairDeleted(demo, configMaps, "ConfigMap")}},
		{"deleted while the watch was down: repair", configMaps, func(h cache.ResourceEventHandler) {
			h.OnDelete(cache.DeletedFinalStateUnknown{Key: "demo/x", Obj: object("ConfigMap", "web", 0, "1")})
		}, []item{repairDeleted(demo, configMaps, "ConfigMap")}},
		{"a long application name, by its label value", deployments, func(h cache.ResourceEventHandler) {
			h.OnAdd(object("Deployment", long, 1, "1"), false)
		}, []item{{app: longApp}}},
		{"an untracked application: nothing", deployments, func(h cache.ResourceEventHandler) { h.OnAdd(object("Deployment", "api", 1, "1"), false) }, nil},
		{"no application label: nothing", deployments, func(h cache.ResourceEventHandler) { h.OnDelete(object("Deployment", "", 1, "1")) }, nil},
		{"not an object: nothing", deployments, func(h cache.ResourceEventHandler) { h.OnDelete("demo/x") }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &monitor{
				queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[item](),
					workqueue.TypedRateLimitingQueueConfig[item]{Name: "test"}),
				tracked: map[apply.App][]apply.Ref{demo: nil, longApp: nil},
			}
			defer m.queue.ShutDown()
			tt.event(m.handlers(tt.gvr))
			var got []item
			for m.queue.Len() > 0 {
				it, _ := m.queue.Get()
				got = append(got, it)
				m.queue.Done(it)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("queued %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRetriable(t *testing.T) {
	gr := schema.GroupResource{Resource: "configmaps"}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"API server unavailable", fmt.Errorf("repair: %w", apierrors.NewServiceUnavailable("restarting")), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true},
		{"NATS not answering", fmt.Errorf("report: %w", errors.New("nats: timeout")), true},
		{"object refused", fmt.Errorf("repair: %w", apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "x", nil)), false},
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no")), false},
		{"snapshot invalid", bus.Terminate(fmt.Errorf("refusing: %w", snapshot.ErrInvalid)), false},
	} {
		if got := retriable(tt.err); got != tt.want {
			t.Errorf("%s: retriable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestDriftOf(t *testing.T) {
	obj := func(uid string, generation int64, rv string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetUID(types.UID(uid))
		u.SetGeneration(generation)
		u.SetResourceVersion(rv)
		return u
	}
	tests := []struct {
		name              string
		deleted           bool
		observed, applied *unstructured.Unstructured
		wantChange        string
		wantDrift         bool
	}{
		{"spec changed, put back", false, obj("u1", 2, "10"), obj("u1", 3, "11"), "modified", true},
		{"our own apply: nothing changed", false, obj("u1", 3, "11"), obj("u1", 3, "11"), "modified", false},
		{"status only moved the resourceVersion", false, obj("u1", 3, "11"), obj("u1", 3, "12"), "modified", false},
		{"ConfigMap content put back", false, obj("u1", 0, "10"), obj("u1", 0, "11"), "modified", true},
		{"ConfigMap as we left it", false, obj("u1", 0, "11"), obj("u1", 0, "11"), "modified", false},
		// The informer had not yet seen a deletion when the repair of an
		// earlier change ran: the apply created the object anew.
		{"deleted behind a stale cache", false, obj("u1", 0, "11"), obj("u2", 0, "13"), "", false},
		{"gone from the cache", false, nil, obj("u2", 0, "13"), "", false},
		{"deleted", true, nil, obj("u2", 0, "13"), "deleted", true},
		{"deleted, already put back by an earlier repair", true, obj("u2", 0, "13"), obj("u2", 0, "13"), "deleted", true},
	}
	for _, tt := range tests {
		change, drift := driftOf(tt.deleted, tt.observed, tt.applied)
		if drift != tt.wantDrift || drift && change != tt.wantChange {
			t.Errorf("%s: driftOf() = %q, %v; want %q, %v", tt.name, change, drift, tt.wantChange, tt.wantDrift)
		}
	}
}

// What the monitor is asked to watch before it starts (a bundle applied
// while the agent still asks to join) is watched once it starts. (Before,
// the informer was registered and never started: no drift repair.)
func TestWatchedBeforeTheMonitorStarts(t *testing.T) {
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "SecretList"})
	m := newMonitor(&Agent{dyn: dyn, log: slog.New(slog.DiscardHandler)})
	app := apply.App{Namespace: "early", Name: "web", UID: "uid-early"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.watch(ctx, app, []apply.Ref{{Version: "v1", Resource: "secrets", Kind: "Secret", Namespace: "early", Name: "x"}}); err != nil {
		t.Fatal(err)
	}
	m.start(ctx)
	m.mu.Lock()
	inf := m.informers[gvr]
	m.mu.Unlock()
	if inf == nil {
		t.Fatal("no informer for secrets")
	}
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("the informer registered before the monitor started never ran")
	}
}
