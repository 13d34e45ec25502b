package testbed

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// steadyFor is how long the node and a Deployment must stay Ready: over
// twice kube-controller-manager's 50 s node-monitor grace period, so a node
// whose heartbeat is not renewed is caught going NotReady.
const steadyFor = 3*time.Minute + 10*time.Second

// TestDeploymentsStayReady holds a Deployment at 1/1 and its node Ready for
// longer than the controller manager takes to give up on a silent node:
// every long test, benchmark and `make demo` left running relies on it.
func TestDeploymentsStayReady(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real API servers and runs for over three minutes")
	}
	t.Parallel()
	env := StartT(t, Options{Clusters: []string{"steady"}})
	cs := clientset(t, env.Cluster("steady"))
	ctx, cancel := context.WithTimeout(context.Background(), steadyFor+2*time.Minute)
	defer cancel()

	if _, err := cs.AppsV1().Deployments("default").Create(ctx, deployment("steady"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, "steady", cs, "steady")
	node := "steady-node"
	lease, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node %s has no lease: %v", node, err)
	}
	firstRenew := lease.Spec.RenewTime.Time

	began := time.Now()
	checks := 0
	for time.Since(began) < steadyFor {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "steady", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ReadyReplicas != 1 || d.Status.AvailableReplicas != 1 {
			t.Fatalf("after %v: Deployment steady is %d/1 ready, %d available (%+v)",
				time.Since(began).Round(time.Second), d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.Conditions)
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c := nodeCondition(n, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
			t.Fatalf("after %v: node %s is not Ready: %+v", time.Since(began).Round(time.Second), node, c)
		}
		checks++
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
	// A node that flapped between two checks leaves an event behind.
	evs, err := cs.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("reason", "NodeNotReady").String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		t.Errorf("NodeNotReady event: %s %s/%s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Namespace, e.InvolvedObject.Name, e.Message)
	}
	lease, err = cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !lease.Spec.RenewTime.After(firstRenew) {
		t.Errorf("node lease not renewed in %v (renew time still %v)", steadyFor, firstRenew)
	}
	t.Logf("Deployment 1/1 and node Ready for %v (%d checks); lease renewed, last at %v", time.Since(began).Round(time.Second), checks, lease.Spec.RenewTime.Time.Format(time.RFC3339))
}

func nodeCondition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}
