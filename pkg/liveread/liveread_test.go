package liveread_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	deploy "github.com/flotilla-dev/flotilla/deploy/liveread"
	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/devenv"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/liveread"
	"github.com/flotilla-dev/flotilla/pkg/query"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// cluster answers as an agent does (pkg/agent's lookup): the objects
// Flotilla applied there, labelled with their Application; NotFound for
// anything else. The agent itself is exercised end to end (test/e2e).
func cluster(objects map[string]map[string]string) liveread.Asker {
	return liveread.AskFunc(func(_ context.Context, c string, req query.Request) (*query.Response, error) {
		if c == "c-down" {
			return nil, fmt.Errorf("cluster %s: no agent is connected", c)
		}
		labels, ok := objects[req.Namespace+"/"+req.Name]
		if !ok {
			return nil, &query.Error{Code: 404, Reason: "NotFound", Message: fmt.Sprintf("configmaps %q not found", req.Name)}
		}
		labels[apply.LabelManagedBy] = apply.ManagedByValue
		name := req.Name
		if name == "liar" {
			name = "demo" // an agent answering with another object than asked
		}
		raw, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": name, "namespace": req.Namespace, "labels": labels}})
		return &query.Response{Object: raw}, nil
	})
}

// longName is an Application's name too long for a label value: its
// objects carry it cut and hashed.
var longName = "a-name-longer-than-a-label-value-may-be-so-the-agent-cuts-and-hashes-it"

// apps are the hub's Applications by namespace (the hub's dynamic client
// lists them in the dispatcher).
type apps map[string][]string

func (a apps) Names(_ context.Context, ns string) ([]string, error) { return a[ns], nil }

type fixture struct {
	hub     *testbed.Cluster
	cs      kubernetes.Interface
	addr    string
	certs   devenv.TLS
	metrics *prometheus.Registry
}

// serve runs the live-read API as the dispatcher does and registers it
// with the hub's API server (deploy/liveread), as `make up` does.
func serve(t *testing.T, ctx context.Context) *fixture {
	tb := testbed.StartT(t, testbed.Options{Dir: t.TempDir()})
	f := &fixture{hub: tb.Hub, metrics: prometheus.NewRegistry()}
	var err error
	if f.cs, err = kubernetes.NewForConfig(tb.Hub.Config); err != nil {
		t.Fatal(err)
	}
	if f.certs, err = devenv.EnsureTLS(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	ca, err := os.ReadFile(f.certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if err := deploy.Install(ctx, tb.Hub.Config, deploy.Options{CABundle: ca, Address: "localhost:" + port}); err != nil {
		t.Fatal(err)
	}
	proxy, err := liveread.LoadFrontProxy(ctx, f.cs)
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]map[string]string{
		"demo/demo":       {apply.LabelAppNS: "demo", apply.LabelApplication: "demo"},
		"demo/other":      {apply.LabelAppNS: "demo", apply.LabelApplication: "other"},
		"demo/unlabelled": {},
		"demo/long":       {apply.LabelAppNS: "demo", apply.LabelApplication: apply.LabelValue(longName)},
		"demo/liar":       {apply.LabelAppNS: "demo", apply.LabelApplication: "demo"},
	}
	dyn, err := dynamic.NewForConfig(tb.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := liveread.New(f.cs, apps{"demo": {"demo", "other", longName}}, cluster(objects), proxy, slog.New(slog.NewTextHandler(io.Discard, nil)), telemetry.Instruments{Metrics: f.metrics})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	sctx, stop := context.WithCancel(context.Background())
	go func() { served <- srv.Serve(sctx, ln, liveread.Options{TLSCert: f.certs.Cert, TLSKey: f.certs.Key}) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	apiServices := schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	eventually.True(t, 60*time.Second, "the hub serves "+deploy.APIService, func() (bool, error) {
		u, err := dyn.Resource(apiServices).Get(ctx, deploy.APIService, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return conditions(u.Object)["Available"] == "True", nil
	})
	return f
}

func conditions(obj map[string]any) map[string]string {
	out := map[string]string{}
	status, _ := obj["status"].(map[string]any)
	list, _ := status["conditions"].([]any)
	for _, c := range list {
		m, _ := c.(map[string]any)
		typ, _ := m["type"].(string)
		st, _ := m["status"].(string)
		out[typ] = st
	}
	return out
}

// person is a hub identity (a ServiceAccount's token) allowed rules in demo.
func (f *fixture) person(t *testing.T, ctx context.Context, name string, rules ...rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	if _, err := f.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := f.cs.CoreV1().ServiceAccounts("demo").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(rules) > 0 {
		if _, err := f.cs.RbacV1().Roles("demo").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.cs.RbacV1().RoleBindings("demo").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: "demo"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := f.cs.CoreV1().ServiceAccounts("demo").CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(f.hub.Config)
	cfg.BearerToken = tok.Status.Token
	return cfg
}

// read asks the hub, as cfg, for ConfigMap name of demo in cluster c.
func read(t *testing.T, ctx context.Context, cfg *rest.Config, c, name string) (*query.Response, error) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := query.URL(c, query.Request{Version: "v1", Kind: "ConfigMap", Namespace: "demo", Name: name})
	r := cs.CoreV1().RESTClient().Get().AbsPath(u.Path)
	for k, vs := range u.Query() {
		r = r.Param(k, vs[0])
	}
	res := r.Do(ctx)
	body, err := res.Raw()
	if err != nil {
		return nil, res.Error() // Raw's error is not the Status the server sent
	}
	var resp query.Response
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	return &resp, nil
}

func status(err error) (int32, string) {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return 0, fmt.Sprint(err)
	}
	return st.Status().Code, st.Status().Message
}

// A live read through the hub follows the hub's RBAC: only a person who may
// get the object's Application sees it; a refusal, a missing object or a
// cluster that is down are told only to a reader of the namespace's
// Applications; and no one reaches the API around the hub by naming
// themselves in its headers.
func TestLiveReadsFollowTheHubsRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := serve(t, ctx)
	getApps := func(names ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{"core.oam.dev"}, Resources: []string{"applications"}, Verbs: []string{"get"}, ResourceNames: names}
	}
	alice := f.person(t, ctx, "alice", getApps("demo"))
	carol := f.person(t, ctx, "carol", getApps())
	longReader := f.person(t, ctx, "long-reader", getApps(longName))
	denied := func(name, cluster string) string {
		return fmt.Sprintf(`may not read ConfigMap %q in namespace "demo" of cluster %s: that takes get on the Application it belongs to, on the hub`, name, cluster)
	}
	bob := f.person(t, ctx, "bob", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}})

	for _, tt := range []struct {
		who      string
		cfg      *rest.Config
		cluster  string
		name     string
		wantCode int32
		want     string
	}{
		{"alice reads her application's object", alice, "c1", "demo", 200, ""},
		{"carol reads any application's object in demo", carol, "c1", "other", 200, ""},
		{"an application with a long name is found for its label", longReader, "c1", "long", 200, ""},
		{"bob may read ConfigMaps on the hub, not the Application", bob, "c1", "demo", 403, denied("demo", "c1")},
		{"alice may not read another application's object", alice, "c1", "other", 403, denied("other", "c1")},
		{"an object naming no application is shown to no one", carol, "c1", "unlabelled", 403, denied("unlabelled", "c1")},
		{"an answer about another object than asked is shown to no one", carol, "c1", "liar", 403, denied("liar", "c1")},
		{"a missing object is told to a reader of demo's applications", carol, "c1", "missing", 404, `configmaps "missing" not found`},
		{"but not to alice, and in the very words of any refusal", alice, "c1", "missing", 403, denied("missing", "c1")},
		{"nor to bob", bob, "c1", "missing", 403, denied("missing", "c1")},
		{"a cluster that is down, to carol", carol, "c-down", "demo", 503, "no agent is connected"},
		{"and to bob, as any refusal", bob, "c-down", "demo", 403, denied("demo", "c-down")},
	} {
		t.Run(tt.who, func(t *testing.T) {
			resp, err := read(t, ctx, tt.cfg, tt.cluster, tt.name)
			if tt.wantCode == 200 {
				if err != nil || !strings.Contains(string(resp.Object), `"name":"`+tt.name+`"`) {
					t.Fatalf("read = %v, %v; want the object", resp, err)
				}
				return
			}
			code, msg := status(err)
			if code != tt.wantCode || !strings.Contains(msg, tt.want) || (code == 403 && !strings.HasSuffix(msg, tt.want)) {
				t.Fatalf("read: %d %q; want %d with %q", code, msg, tt.wantCode, tt.want)
			}
		})
	}
	if n := reads(t, f.metrics, liveread.OutcomeServed); n != 3 {
		t.Errorf("flotilla_live_reads_total{outcome=served} = %v, want 3", n)
	}

	// Around the hub: the headers alone, or under a client certificate the
	// hub's own CA signed (not the front proxy's), name no one.
	roots := x509.NewCertPool()
	ca, _ := os.ReadFile(f.certs.CA)
	roots.AppendCertsFromPEM(ca)
	admin, err := tls.X509KeyPair(f.hub.Config.CertData, f.hub.Config.KeyData)
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "the hub's admin certificate": {admin}} {
		t.Run("around the hub with "+name, func(t *testing.T) {
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
				RootCAs: roots, ServerName: deploy.ServiceHost, Certificates: certs}}}
			u := query.URL("c1", query.Request{Version: "v1", Kind: "ConfigMap", Namespace: "demo", Name: "demo"})
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+f.addr+u.String(), nil)
			req.Header.Set("X-Remote-User", "system:admin")
			req.Header.Add("X-Remote-Group", "system:masters")
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), `"object"`) {
				t.Fatalf("%d %s; want 401 and no object", res.StatusCode, body)
			}
		})
	}
}

// reads is flotilla_live_reads_total of outcome.
func reads(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "flotilla_live_reads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
