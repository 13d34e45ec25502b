package planner

import (
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
)

// ReasonClusterDeleted: the hub no longer has the ManagedCluster.
const ReasonClusterDeleted = "ManagedClusterDeleted"

// Outage is why, and since when, the hub has no word from a cluster: its
// ManagedCluster's AVAILABLE condition is Unknown or False. What the
// cluster last reported is then stale, never shown as its health.
type Outage struct {
	Since  time.Time
	Status metav1.ConditionStatus
	// Reason is the condition's; its message (the agent's words, which
	// change with every heartbeat) is left out of the Application.
	Reason string
}

// outages are the outages of the clusters rec placed its release on, as
// the hub's ManagedClusters say. A cluster the hub does not have, or whose
// availability is not known yet, has none.
func (p *Planner) outages(rec *Record) map[string]Outage {
	if rec == nil || rec.Run == nil || p.clusters == nil {
		return nil
	}
	var out map[string]Outage
	for _, c := range rec.Run.DeployedClusters() {
		obj, err := p.clusters.Get(c)
		if apierrors.IsNotFound(err) {
			// Gone from the hub: nothing it says is heard any more.
			if out == nil {
				out = map[string]Outage{}
			}
			out[c] = Outage{Status: metav1.ConditionUnknown, Reason: ReasonClusterDeleted}
			continue
		}
		if err != nil {
			continue
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		if o, down := outageOf(u); down {
			if out == nil {
				out = map[string]Outage{}
			}
			out[c] = o
		}
	}
	return out
}

func outageOf(u *unstructured.Unstructured) (Outage, bool) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != clusterv1.ConditionAvailable {
			continue
		}
		status, _ := m["status"].(string)
		if status == string(metav1.ConditionTrue) || status == "" {
			return Outage{}, false
		}
		o := Outage{Status: metav1.ConditionStatus(status)}
		o.Reason, _ = m["reason"].(string)
		if ts, _ := m["lastTransitionTime"].(string); ts != "" {
			o.Since, _ = time.Parse(time.RFC3339, ts)
		}
		return o, true
	}
	return Outage{}, false
}
