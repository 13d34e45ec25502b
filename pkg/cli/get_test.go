package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/pkg/query"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// answer is what an agent answers for an object of a real cluster: the
// object, and the table the cluster's API server prints for it
// (server-side printing, as kubectl gets it).
func answer(t *testing.T, cs kubernetes.Interface, path string) *query.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obj, err := cs.CoreV1().RESTClient().Get().AbsPath(path).Do(ctx).Raw()
	if err != nil {
		t.Fatal(err)
	}
	table, err := cs.CoreV1().RESTClient().Get().AbsPath(path).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json").Do(ctx).Raw()
	if err != nil {
		t.Fatal(err)
	}
	return &query.Response{Object: obj, Table: table}
}

// refusal is the API server's own refusal of path, as an agent passes it on.
func refusal(t *testing.T, cs kubernetes.Interface, path string) *query.Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cs.CoreV1().RESTClient().Get().AbsPath(path).Do(ctx).Error()
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		t.Fatalf("GET %s: %v, want the API server's refusal", path, err)
	}
	s := st.Status()
	return &query.Error{Code: int(s.Code), Reason: string(s.Reason), Message: s.Message}
}

// `kubectl flotilla get` prints a cluster's answer as kubectl does: the
// table the cluster's API server printed (its columns for the kind), YAML,
// or indented JSON; a refusal as "Error from server (Reason): message".
func TestGetOutput(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{Clusters: []string{"c1"}})
	cs, err := kubernetes.NewForConfig(env.Cluster("c1").Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	managed := map[string]string{"app.kubernetes.io/managed-by": "flotilla", "app": "web"}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: managed},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings", Labels: managed}, Data: map[string]string{"a": "1", "b": "2"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deploy := answer(t, cs, "/apis/apps/v1/namespaces/default/deployments/web")
	settings := answer(t, cs, "/api/v1/namespaces/default/configmaps/settings")
	notFound := refusal(t, cs, "/apis/apps/v1/namespaces/default/deployments/nope")
	forbidden := &query.Error{Code: 403, Reason: "Forbidden", Message: `deployments.apps "kube-dns" is not managed by Flotilla: the agent answers only about objects Flotilla applied`}

	tests := []struct {
		name    string
		resp    *query.Response
		err     error
		output  string
		out     []string // lines of stdout, as regular expressions
		errOut  string
		refused bool
		wantErr string
	}{
		{name: "table of a Deployment", resp: deploy, out: []string{
			`NAME   READY   UP-TO-DATE   AVAILABLE   AGE`,
			`web    \d/2     \d            \d           \S+`,
		}},
		{name: "table of a ConfigMap: its own columns", resp: settings, out: []string{
			`NAME       DATA   AGE`,
			`settings   2      \S+`,
		}},
		{name: "not found", err: notFound, errOut: "Error from server (NotFound): deployments.apps \"nope\" not found\n", refused: true},
		{name: "not managed", err: forbidden, errOut: "Error from server (Forbidden): " + forbidden.Message + "\n", refused: true},
		{name: "no agent", err: errors.New("cluster c9: no agent is connected"), errOut: "error: cluster c9: no agent is connected\n", refused: true},
		{name: "no table sent", resp: &query.Response{Object: deploy.Object}, wantErr: "the agent sent no table"},
		{name: "unknown format", resp: deploy, output: "xml", wantErr: `unknown output format "xml": use yaml or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			refused, err := report(&out, &errOut, tt.resp, tt.err, tt.output)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("report() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || refused != tt.refused {
				t.Fatalf("report() = %v, %v; want refused %v", refused, err, tt.refused)
			}
			if errOut.String() != tt.errOut {
				t.Errorf("stderr %q, want %q", errOut.String(), tt.errOut)
			}
			lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
			if len(tt.out) == 0 {
				lines = nil
				if out.Len() > 0 {
					t.Errorf("stdout %q, want nothing", out.String())
				}
			}
			if len(lines) != len(tt.out) {
				t.Fatalf("stdout has %d lines, want %d:\n%s", len(lines), len(tt.out), out.String())
			}
			for i, re := range tt.out {
				if !regexp.MustCompile("^" + re + "$").MatchString(lines[i]) {
					t.Errorf("line %d = %q, want %s", i+1, lines[i], re)
				}
			}
		})
	}

	// -o yaml and -o json print the object itself, whole.
	var want map[string]any
	if err := json.Unmarshal(deploy.Object, &want); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"yaml", "json"} {
		t.Run("-o "+format, func(t *testing.T) {
			var out bytes.Buffer
			if refused, err := report(&out, &bytes.Buffer{}, deploy, nil, format); err != nil || refused {
				t.Fatalf("report() = %v, %v", refused, err)
			}
			var got map[string]any
			switch format {
			case "yaml":
				if !strings.HasPrefix(out.String(), "apiVersion: apps/v1\n") {
					t.Errorf("not YAML as kubectl prints it:\n%s", out.String())
				}
				if err := yaml.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
			case "json":
				if !strings.HasPrefix(out.String(), "{\n    \"apiVersion\": \"apps/v1\",\n") {
					t.Errorf("not JSON indented as kubectl prints it:\n%s", out.String())
				}
				if err := json.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("-o %s printed another object:\n%s", format, out.String())
			}
		})
	}
}

// A hub that serves no live reads (deploy/liveread not installed) is said
// to be so, with what to do, in kubectl's refusal line.
func TestGetFromAHubWithoutLiveReads(t *testing.T) {
	env := testbed.StartT(t, testbed.Options{})
	cs, err := kubernetes.NewForConfig(env.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := liveRead(ctx, cs.CoreV1().RESTClient(), "c1", query.Request{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "demo"})
	var errOut bytes.Buffer
	refused, rerr := report(&bytes.Buffer{}, &errOut, resp, err, "")
	if rerr != nil || !refused {
		t.Fatalf("report = %v, %v; want a refusal", refused, rerr)
	}
	if want := "Error from server (NotFound): the server could not find the requested resource (the hub serves no live reads: install deploy/liveread and run the dispatcher with --live-read-listen)\n"; errOut.String() != want {
		t.Errorf("printed %q, want %q", errOut.String(), want)
	}
}
