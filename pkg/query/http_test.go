package query

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestURLRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name, cluster string
		req           Request
		wantPath      string
	}{
		{"namespaced by kind", "c1", Request{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "demo", Table: true},
			"/apis/query.flotilla.dev/v1alpha1/namespaces/demo/liveobjects/demo"},
		{"cluster-scoped", "c2", Request{Version: "v1", Kind: "Namespace", Name: "demo"},
			"/apis/query.flotilla.dev/v1alpha1/liveobjects/demo"},
		{"by resource", "managedcluster-cabc12", Request{Version: "v1", Resource: "configmaps", Namespace: "x", Name: "y"},
			"/apis/query.flotilla.dev/v1alpha1/namespaces/x/liveobjects/y"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := URL(tt.cluster, tt.req)
			if u.Path != tt.wantPath {
				t.Errorf("path %s, want %s", u.Path, tt.wantPath)
			}
			// As the hub's API server forwards it.
			back, err := url.Parse(u.String())
			if err != nil {
				t.Fatal(err)
			}
			cluster, req, err := FromURL(back)
			if err != nil || cluster != tt.cluster || !reflect.DeepEqual(req, tt.req) {
				t.Errorf("FromURL = %q, %+v, %v; want %q, %+v", cluster, req, err, tt.cluster, tt.req)
			}
		})
	}
}

func TestFromURLRefuses(t *testing.T) {
	for raw, want := range map[string]string{
		"/apis/other/v1/namespaces/demo/liveobjects/demo?cluster=c1":                         "not a live read",
		"/apis/query.flotilla.dev/v1alpha1/namespaces/demo/pods/demo?cluster=c1&kind=Pod":    "not a live read",
		"/apis/query.flotilla.dev/v1alpha1/namespaces//liveobjects/demo?cluster=c1&kind=Pod": "not a live read",
		"/apis/query.flotilla.dev/v1alpha1/namespaces/demo/liveobjects/a/b?cluster=c1":       "not a live read",
		"/apis/query.flotilla.dev/v1alpha1/namespaces/demo/liveobjects/demo?kind=Pod":        "cluster is required",
		"/apis/query.flotilla.dev/v1alpha1/namespaces/demo/liveobjects/demo?cluster=c1":      "kind or resource",
		"/apis/query.flotilla.dev/v1alpha1/liveobjects/?cluster=c1&kind=Namespace":           "name is required",
		"/apis/query.flotilla.dev/v1alpha1/liveobjects/x?cluster=c1&kind=N&table=maybe":      "table",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := FromURL(u); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("FromURL(%s) = %v, want an error with %q", raw, err, want)
		}
	}
}

// FromURL reads what any caller of the hub's API sends: it never panics,
// and what it accepts is a valid request that travels back unchanged.
func FuzzFromURL(f *testing.F) {
	f.Add("/apis/query.flotilla.dev/v1alpha1/namespaces/demo/liveobjects/demo", "cluster=c1&group=apps&version=v1&kind=Deployment&table=true")
	f.Add("/apis/query.flotilla.dev/v1alpha1/liveobjects/x", "cluster=c&resource=namespaces&version=v1")
	f.Fuzz(func(t *testing.T, path, rawQuery string) {
		cluster, req, err := FromURL(&url.URL{Path: path, RawQuery: rawQuery})
		if err != nil {
			return
		}
		if req.Validate() != nil || cluster == "" {
			t.Fatalf("accepted an invalid request %+v for %q", req, cluster)
		}
		c2, req2, err := FromURL(URL(cluster, req))
		if err != nil || c2 != cluster || !reflect.DeepEqual(req2, req) {
			t.Fatalf("round trip of %+v: %+v, %v", req, req2, err)
		}
	})
}

// Each field goes into a path at the cluster's API server: none may step
// out of the resource or namespace asked for, nor be a subject wildcard.
func TestValidateRefusesPathsAndWildcards(t *testing.T) {
	ok := Request{Version: "v1", Resource: "configmaps", Namespace: "demo", Name: "demo"}
	for name, tt := range map[string]struct {
		cluster string
		req     func(r *Request)
	}{
		"resource with a slash":    {"c1", func(r *Request) { r.Resource = "secrets/" }},
		"resource stepping up":     {"c1", func(r *Request) { r.Resource = "../other/secrets" }},
		"version stepping up":      {"c1", func(r *Request) { r.Version = "v1/../../x" }},
		"group with a slash":       {"c1", func(r *Request) { r.Group = "apps/v1" }},
		"kind with a slash":        {"c1", func(r *Request) { r.Resource, r.Kind = "", "Secret/x" }},
		"name stepping up":         {"c1", func(r *Request) { r.Name = ".." }},
		"name with a slash":        {"c1", func(r *Request) { r.Name = "a/b" }},
		"namespace with a slash":   {"c1", func(r *Request) { r.Namespace = "demo/secrets" }},
		"a wildcard cluster":       {"*", func(*Request) {}},
		"every cluster":            {">", func(*Request) {}},
		"a cluster with a subject": {"c1.x", func(*Request) {}},
	} {
		t.Run(name, func(t *testing.T) {
			r := ok
			tt.req(&r)
			u := URL(tt.cluster, r)
			_, _, err := FromURL(u)
			if name == "a cluster with a subject" {
				// A dotted name is a valid ManagedCluster name (bus escapes it).
				if err != nil {
					t.Fatalf("FromURL: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("FromURL(%s) accepted %+v for %q", u, r, tt.cluster)
			}
		})
	}
}
