package dispatcher

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	clusterv1beta2 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1beta2"
	grantv1alpha1 "github.com/flotilla-dev/flotilla/pkg/api/grant/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/grant"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

func topo(name, props string) events.Policy {
	return events.Policy{Name: name, Type: "topology", Properties: json.RawMessage(props)}
}

// grants has one cluster set, "vault", bound to namespace "bank" only.
var grants = grant.Grants{
	Sets:     []clusterv1beta2.ManagedClusterSet{{ObjectMeta: metav1.ObjectMeta{Name: "vault"}}},
	Bindings: []clusterv1beta2.ManagedClusterSetBinding{{ObjectMeta: metav1.ObjectMeta{Name: "vault", Namespace: "bank"}, Spec: clusterv1beta2.ManagedClusterSetBindingSpec{ClusterSet: "vault"}}},
	Scopes:   []grantv1alpha1.ScopeGrant{{ObjectMeta: metav1.ObjectMeta{Name: "demo-anywhere"}, Spec: grantv1alpha1.ScopeGrantSpec{Namespaces: []string{"demo"}, TargetNamespaces: []string{"*"}}}},
}

func TestPlace(t *testing.T) {
	clusters := []Cluster{
		{Name: "test-1", Accepted: true, Labels: map[string]string{"env": "test"}},
		{Name: "prod-1", Accepted: true, Labels: map[string]string{"env": "prod", "region": "eu"}},
		{Name: "prod-2", Accepted: true, Labels: map[string]string{"env": "prod", "region": "us"}},
		{Name: "new", Accepted: false, Labels: map[string]string{"env": "prod"}},
		{Name: "vault-1", Accepted: true, Labels: map[string]string{"env": "prod", clusterv1beta2.LabelClusterSet: "vault"}},
		{Name: "vault-2", Accepted: true, Labels: map[string]string{"env": "secure", clusterv1beta2.LabelClusterSet: "vault"}},
	}
	tests := []struct {
		name     string
		policies []events.Policy
		want     []string
		reason   string
		msg      string
	}{
		{"by name", []events.Policy{topo("t", `{"clusters":["test-1"]}`)}, []string{"test-1"}, "", ""},
		{"by selector skips unaccepted", []events.Policy{topo("p", `{"clusterLabelSelector":{"env":"prod"}}`)}, []string{"prod-1", "prod-2"}, "", ""},
		{"selector alias", []events.Policy{topo("p", `{"clusterSelector":{"region":"us"}}`)}, []string{"prod-2"}, "", ""},
		{"union, deduplicated", []events.Policy{topo("a", `{"clusters":["prod-1"]}`), topo("b", `{"clusterLabelSelector":{"env":"prod"}}`)}, []string{"prod-1", "prod-2"}, "", ""},
		{"unknown cluster", []events.Policy{topo("t", `{"clusters":["test-1","gone"]}`)}, nil, ReasonClusterNotFound, `policy "t" names cluster "gone"`},
		{"unaccepted cluster", []events.Policy{topo("t", `{"clusters":["new"]}`)}, nil, ReasonClusterNotAccepted, `cluster "new", which the hub has not accepted`},
		{"selector matches none", []events.Policy{topo("p", `{"clusterLabelSelector":{"env":"staging"}}`)}, nil, ReasonNoClusterMatched, "env=staging matches no accepted cluster"},
		{"allowEmpty", []events.Policy{topo("p", `{"clusterLabelSelector":{"env":"staging"},"allowEmpty":true}`)}, nil, "", ""},
		{"no target at all", []events.Policy{topo("p", `{}`)}, nil, ReasonInvalidTopology, "names no clusters"},
		{"bad properties", []events.Policy{topo("p", `{"clusters":"test-1"}`)}, nil, ReasonInvalidTopology, `policy "p": properties`},
		// Grants: a set's clusters only for the namespaces bound to it.
		{"named cluster in an unbound set", []events.Policy{topo("p", `{"clusters":["vault-1"]}`)}, nil, grant.ReasonClusterNotBound, `policy "p": cluster "vault-1" is in ManagedClusterSet vault, which namespace "demo" is not bound to`},
		{"selector skips an unbound set", []events.Policy{topo("p", `{"clusterLabelSelector":{"env":"prod"}}`)}, []string{"prod-1", "prod-2"}, "", ""},
		{"selector only in an unbound set", []events.Policy{topo("p", `{"clusterLabelSelector":{"env":"secure"}}`)}, nil, grant.ReasonClusterNotBound, `policy "p": clusterLabelSelector env=secure matches only clusters namespace "demo" may not deploy to: cluster "vault-2"`},
		{"selector only in an unbound set, allowEmpty", []events.Policy{topo("p", `{"clusterLabelSelector":{"env":"secure"},"allowEmpty":true}`)}, nil, "", ""},
		{"target namespace not granted", []events.Policy{topo("p", `{"clusters":["test-1"],"namespace":"kube-system"}`)}, nil, grant.ReasonNamespaceNotGranted, `policy "p": Applications of namespace "other"`},
		{"agent's namespace", []events.Policy{topo("p", `{"clusters":["test-1"],"namespace":"flotilla-system"}`)}, nil, grant.ReasonReservedNamespace, `policy "p"`},
	}
	// The bound namespace reaches the set too.
	bank := []struct {
		policies []events.Policy
		want     []string
	}{
		{[]events.Policy{topo("p", `{"clusters":["vault-1"]}`)}, []string{"vault-1"}},
		{[]events.Policy{topo("p", `{"clusterLabelSelector":{"env":"prod"}}`)}, []string{"prod-1", "prod-2", "vault-1"}},
	}
	for _, b := range bank {
		if got, err := Place("bank", b.policies, clusters, grants); err != nil || !slices.Equal(got.Clusters, b.want) {
			t.Errorf("bank: Place(%s) = %v, %v; want %v", b.policies[0].Properties, got.Clusters, err, b.want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := "demo"
			if tt.reason == grant.ReasonNamespaceNotGranted {
				ns = "other"
			}
			got, err := Place(ns, tt.policies, clusters, grants)
			if tt.reason == "" {
				if err != nil || !slices.Equal(got.Clusters, tt.want) {
					t.Fatalf("Place() = %v, %v; want %v", got.Clusters, err, tt.want)
				}
				return
			}
			pe, ok := problem.As(err)
			if !ok || pe.Reason != tt.reason || !strings.Contains(pe.Message, tt.msg) {
				t.Fatalf("Place() error = %v; want %s containing %q", err, tt.reason, tt.msg)
			}
		})
	}
}

func TestClusterConditions(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	hb := &seen{At: now.Add(-time.Second), HeartbeatMillis: 1000}
	mc := &clusterv1.ManagedCluster{}
	mc.Name = "c1"

	conds := clusterConditions(mc, hb, 3, now, nil)
	if meta.FindStatusCondition(conds, clusterv1.ConditionJoined) != nil {
		t.Error("not accepted, yet a Joined condition")
	}
	if !meta.IsStatusConditionTrue(conds, clusterv1.ConditionAvailable) {
		t.Error("heartbeats arrive, yet not available")
	}

	mc.Spec.HubAcceptsClient = true
	mc.Status.Conditions = clusterConditions(mc, hb, 3, now, nil)
	if !meta.IsStatusConditionTrue(mc.Status.Conditions, clusterv1.ConditionJoined) {
		t.Error("accepted and beating, yet not joined")
	}
	// Three missed heartbeats: unknown, still joined.
	later := now.Add(3*time.Second + time.Millisecond)
	conds = clusterConditions(mc, hb, 3, later, nil)
	if c := meta.FindStatusCondition(conds, clusterv1.ConditionAvailable); c.Status != metav1.ConditionUnknown || !strings.Contains(c.Message, "no heartbeat since") {
		t.Errorf("available after 3 missed heartbeats: %+v", c)
	}
	if !meta.IsStatusConditionTrue(conds, clusterv1.ConditionJoined) {
		t.Error("a joined cluster stays joined while away")
	}
	// Connected, but its API server does not answer: not available, and why.
	sick := &seen{At: now, HeartbeatMillis: 1000, Problem: "the cluster's API server is not ready: connection refused"}
	if c := meta.FindStatusCondition(clusterConditions(mc, sick, 3, now, nil), clusterv1.ConditionAvailable); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "connection refused") {
		t.Errorf("available with an unreachable API server: %+v", c)
	}
	// The message does not change with every check (no status write per tick).
	if a, b := clusterConditions(mc, hb, 3, later, nil), clusterConditions(mc, hb, 3, later.Add(time.Minute), nil); meta.FindStatusCondition(a, clusterv1.ConditionAvailable).Message != meta.FindStatusCondition(b, clusterv1.ConditionAvailable).Message {
		t.Error("unavailable message changes over time")
	}
	// At a site whose link is down: unknown at once, fresh heartbeat or
	// not (nothing it says reaches the hub), saying since when.
	cut := &siteLink{site: "edge", since: now.Add(-time.Minute)}
	c := meta.FindStatusCondition(clusterConditions(mc, hb, 3, now, cut), clusterv1.ConditionAvailable)
	if c.Status != metav1.ConditionUnknown || c.Reason != "SiteLinkDown" || !strings.Contains(c.Message, "site edge") || !strings.Contains(c.Message, "09:59:00Z") {
		t.Errorf("available while its site's link is down: %+v", c)
	}
}

// A topology's namespace is where the objects go; a later policy naming
// none keeps the earlier one's.
func TestPlaceNamespace(t *testing.T) {
	clusters := []Cluster{{Name: "c1", Accepted: true}}
	tests := []struct {
		name     string
		policies []events.Policy
		want     string
	}{
		{"none", []events.Policy{topo("t", `{"clusters":["c1"]}`)}, ""},
		{"set", []events.Policy{topo("t", `{"clusters":["c1"],"namespace":"shop"}`)}, "shop"},
		{"later one wins", []events.Policy{topo("a", `{"clusters":["c1"],"namespace":"a"}`), topo("b", `{"clusters":["c1"],"namespace":"b"}`)}, "b"},
		{"later one silent", []events.Policy{topo("a", `{"clusters":["c1"],"namespace":"a"}`), topo("b", `{"clusters":["c1"]}`)}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Place("demo", tt.policies, clusters, grants)
			if err != nil || got.Namespace != tt.want {
				t.Errorf("Place() namespace = %q, %v; want %q", got.Namespace, err, tt.want)
			}
		})
	}
}

// AVAILABLE holds exactly as long as missed heartbeats allow: at missed ×
// interval after the last beat the cluster is still available, a moment
// later Unknown.
func TestAvailabilityBoundary(t *testing.T) {
	beat := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	const interval = 300 * time.Millisecond
	last := &seen{At: beat, HeartbeatMillis: interval.Milliseconds()}
	mc := &clusterv1.ManagedCluster{}
	mc.Name, mc.Spec.HubAcceptsClient = "c1", true
	tests := []struct {
		name   string
		missed int
		after  time.Duration
		want   metav1.ConditionStatus
	}{
		{"at the beat", 3, 0, metav1.ConditionTrue},
		{"two missed", 3, 2 * interval, metav1.ConditionTrue},
		{"exactly three intervals", 3, 3 * interval, metav1.ConditionTrue},
		{"just after three", 3, 3*interval + time.Nanosecond, metav1.ConditionUnknown},
		{"long gone", 3, time.Hour, metav1.ConditionUnknown},
		{"one allowed: exactly one interval", 1, interval, metav1.ConditionTrue},
		{"one allowed: just after", 1, interval + time.Nanosecond, metav1.ConditionUnknown},
		{"five allowed: just after four", 5, 4*interval + time.Nanosecond, metav1.ConditionTrue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := meta.FindStatusCondition(clusterConditions(mc, last, tt.missed, beat.Add(tt.after), nil), clusterv1.ConditionAvailable)
			if c == nil || c.Status != tt.want {
				t.Fatalf("AVAILABLE %v after the last beat with %d allowed missed: %+v, want %s", tt.after, tt.missed, c, tt.want)
			}
		})
	}
}
