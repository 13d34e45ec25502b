package apply

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

func parse(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	data, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatalf("parse %q: %v", doc, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatalf("parse %q: %v", doc, err)
	}
	return u
}

// deploymentStatus is a Deployment of one replica as its controller reports it
// with ready of them ready.
func deploymentStatus(ready int) string {
	available := "False"
	if ready > 0 {
		available = "True"
	}
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo, generation: 2}
spec: {replicas: 1, progressDeadlineSeconds: 600}
status:
  observedGeneration: 2
  replicas: 1
  updatedReplicas: 1
  readyReplicas: ` + string(rune('0'+ready)) + `
  availableReplicas: ` + string(rune('0'+ready)) + `
  conditions:
  - {type: Available, status: "` + available + `", reason: MinimumReplicasAvailable}
  - {type: Progressing, status: "True", reason: NewReplicaSetAvailable}
`
}

func TestHealth(t *testing.T) {
	widget := func(status string) string {
		return `apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: demo, generation: 3}
status:
  observedGeneration: 3
  conditions: [` + status + `]
`
	}
	tests := []struct {
		name         string
		ref          Ref
		obj          string // YAML; empty: the object is not in the cluster
		wantHealth   events.Health
		wantMessage  string // a part of it
		wantReplicas *events.Replicas
		wantGen      int64
	}{
		{
			name: "Deployment 0/1", ref: Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "web"},
			obj: deploymentStatus(0), wantHealth: events.HealthInProgress, wantMessage: "Available: 0/1",
			wantReplicas: &events.Replicas{Desired: 1, Ready: 0, Updated: 1, Available: 0}, wantGen: 2,
		},
		{
			name: "Deployment 1/1", ref: Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "web"},
			obj: deploymentStatus(1), wantHealth: events.HealthCurrent,
			wantReplicas: &events.Replicas{Desired: 1, Ready: 1, Updated: 1, Available: 1}, wantGen: 2,
		},
		{
			name: "Deployment its controller has not seen yet", ref: Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "web"},
			obj: strings.Replace(deploymentStatus(1), "generation: 2}", "generation: 3}", 1), wantHealth: events.HealthInProgress,
			wantReplicas: &events.Replicas{Desired: 1, Ready: 1, Updated: 1, Available: 1}, wantGen: 3,
		},
		{
			name: "StatefulSet replicas summary", ref: Ref{Group: "apps", Version: "v1", Kind: "StatefulSet", Namespace: "demo", Name: "db"},
			obj: `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: demo, generation: 1}
spec: {replicas: 3}
status: {observedGeneration: 1, replicas: 3, readyReplicas: 2, updatedReplicas: 3, availableReplicas: 2, currentReplicas: 3}
`,
			wantHealth: events.HealthInProgress, wantReplicas: &events.Replicas{Desired: 3, Ready: 2, Updated: 3, Available: 2}, wantGen: 1,
		},
		{
			name: "Deployment without spec.replicas wants one", ref: Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "demo", Name: "web"},
			obj:        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo, generation: 1}\n",
			wantHealth: events.HealthInProgress, wantReplicas: &events.Replicas{Desired: 1}, wantGen: 1,
		},
		{
			name: "ConfigMap", ref: Ref{Version: "v1", Kind: "ConfigMap", Namespace: "demo", Name: "settings"},
			obj: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: demo}\ndata: {color: red}\n", wantHealth: events.HealthCurrent,
		},
		{
			name: "custom kind Ready", ref: Ref{Group: "example.com", Version: "v1", Kind: "Widget", Namespace: "demo", Name: "w"},
			obj: widget(`{type: Ready, status: "True", reason: Done}`), wantHealth: events.HealthCurrent, wantGen: 3,
		},
		{
			name: "custom kind not Ready", ref: Ref{Group: "example.com", Version: "v1", Kind: "Widget", Namespace: "demo", Name: "w"},
			obj: widget(`{type: Ready, status: "False", reason: Waiting, message: waiting for the widget}`), wantHealth: events.HealthInProgress, wantGen: 3,
		},
		{
			name: "custom kind stalled", ref: Ref{Group: "example.com", Version: "v1", Kind: "Widget", Namespace: "demo", Name: "w"},
			obj: widget(`{type: Stalled, status: "True", reason: Broken, message: the widget is broken}`), wantHealth: events.HealthFailed,
			wantMessage: "the widget is broken", wantGen: 3,
		},
		{
			name: "not in the cluster", ref: Ref{Version: "v1", Kind: "ConfigMap", Namespace: "demo", Name: "gone"},
			wantHealth: events.HealthNotFound, wantMessage: "not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o *unstructured.Unstructured
			if tt.obj != "" {
				o = parse(t, tt.obj)
			}
			st := Health(tt.ref, o)
			if st.Group != tt.ref.Group || st.Version != tt.ref.Version || st.Kind != tt.ref.Kind || st.Namespace != tt.ref.Namespace || st.Name != tt.ref.Name {
				t.Errorf("status names %s/%s %s %s/%s, want %s", st.Group, st.Version, st.Kind, st.Namespace, st.Name, tt.ref)
			}
			if st.Health != tt.wantHealth {
				t.Errorf("health = %s (%q), want %s", st.Health, st.Message, tt.wantHealth)
			}
			if !strings.Contains(st.Message, tt.wantMessage) {
				t.Errorf("message = %q, want it to say %q", st.Message, tt.wantMessage)
			}
			if st.Generation != tt.wantGen {
				t.Errorf("generation = %d, want %d", st.Generation, tt.wantGen)
			}
			switch {
			case tt.wantReplicas == nil && st.Replicas != nil:
				t.Errorf("replicas = %+v, want none", *st.Replicas)
			case tt.wantReplicas != nil && (st.Replicas == nil || *st.Replicas != *tt.wantReplicas):
				t.Errorf("replicas = %+v, want %+v", st.Replicas, *tt.wantReplicas)
			}
		})
	}
}
