package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
)

// Production sits at an air-gapped site: its agent talks only to the
// site's leaf node, whose one link to the hub is cut mid-rollout. The hub
// says the cluster is cut off and never calls it healthy; the approval is
// taken while cut off; the agent restarted while cut off comes back on what
// its site holds and repairs drift with no hub; when the link returns the
// newest of 100 releases made while cut off is applied once, and status
// flows back.
func TestAirGappedSite(t *testing.T) {
	s := setup(t)
	testC, prodC := s.env.Clusters[0], s.env.Clusters[1]
	if prodC != s.env.SiteCluster {
		t.Fatalf("production %s is not the cluster at the site (%s)", prodC, s.env.SiteCluster)
	}
	kubectl := func(args ...string) string { t.Helper(); return s.must("kubectl", args...) }
	prodKubeconfig := filepath.Join(s.dir, "kubeconfig", prodC)
	inProd := func(args ...string) (string, error) {
		return s.run("kubectl", append([]string{"--kubeconfig", prodKubeconfig}, args...)...)
	}

	kubectl("create", "namespace", "demo")
	kubectl("apply", "-f", "examples/seed/app-meta.yaml")
	policies := strings.NewReplacer("<clusterid1>", testC, "<clusterid2>", prodC).Replace(readFile(t, filepath.Join(s.root, "examples/seed/policy-topology.yaml")))
	kubectl("apply", "-f", writeFile(t, s.dir, "policy-topology.yaml", policies))
	kubectl("apply", "-f", "examples/seed/workflow.yaml")
	kubectl("apply", "-f", "examples/seed/app.yaml")
	s.eventually(`workflowSuspending +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", testC)

	// Cut at the approval.
	if err := s.env.LinkDown(linkproxy.Reset); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	s.eventually(`^Unknown SiteLinkDown$`, "kubectl", "get", "managedcluster", prodC, "-o",
		`jsonpath={range .status.conditions[?(@.type=="ManagedClusterConditionAvailable")]}{.status} {.reason}{end}`)
	t.Logf("link cut -> production AVAILABLE Unknown (SiteLinkDown) on the hub: %v", time.Since(cut).Round(10*time.Millisecond))
	matchLines(t, s.must("kubectl", "flotilla", "workflow", "resume", "demo", "-n", "demo"), `Successfully resume workflow: demo`)
	// While cut off, and with its agent restarted: nothing reaches
	// production, and the hub does not call it healthy.
	if _, err := s.env.Restart("agent-" + prodC); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if out, err := inProd("get", "deployment", "demo", "-n", "demo"); err == nil {
		t.Fatalf("production got the release while its site was cut off:\n%s", out)
	}
	status := kubectl("get", "app", "demo", "-n", "demo", "-o",
		`jsonpath={.status.status} {range .status.services[?(@.cluster=="`+prodC+`")]}{.healthy} {.message}{end}`)
	if !strings.HasPrefix(status, "runningWorkflow false health unknown") || !strings.Contains(status, "SiteLinkDown") {
		t.Fatalf("while production is cut off the application says %q, want runningWorkflow, production's health unknown (SiteLinkDown)", status)
	}

	if err := s.env.LinkUp(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	s.eventually(`^1$`, "kubectl", "--kubeconfig", prodKubeconfig, "get", "deployment", "demo", "-n", "demo", "-o", "jsonpath={.status.readyReplicas}")
	t.Logf("link up -> production 1/1 (in the cluster): %v", time.Since(back).Round(10*time.Millisecond))
	s.eventually(`demo +demo +ref-objects +running +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	t.Logf("link up -> application running on the hub: %v", time.Since(back).Round(10*time.Millisecond))
	s.eventually(`^True `, "kubectl", "get", "managedcluster", prodC, "-o",
		`jsonpath={range .status.conditions[?(@.type=="ManagedClusterConditionAvailable")]}{.status} {.reason}{end}`)
	// A live read of the site's cluster: asked in the site's own account,
	// answered over the link.
	s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC)

	// Cut again (blackholed this time): the agent keeps repairing drift
	// on its own, restarted too, with no hub to ask.
	if err := s.env.LinkDown(linkproxy.Blackhole); err != nil {
		t.Fatal(err)
	}
	s.eventually(`^Unknown SiteLinkDown$`, "kubectl", "get", "managedcluster", prodC, "-o",
		`jsonpath={range .status.conditions[?(@.type=="ManagedClusterConditionAvailable")]}{.status} {.reason}{end}`)
	for _, restart := range []bool{false, true} {
		if restart {
			if _, err := s.env.Restart("agent-" + prodC); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := inProd("-n", "demo", "scale", "deployment/demo", "--replicas=3"); err != nil {
			t.Fatalf("scale in production: %v\n%s", err, out)
		}
		s.eventually(`^1$`, "kubectl", "--kubeconfig", prodKubeconfig, "-n", "demo", "get", "deployment/demo", "-o", "jsonpath={.spec.replicas}")
	}

	// 100 releases of another application, all made while cut off.
	baseline := s.agentApplies(t, prodC)
	hub := s.env.Testbed.Hub.Config
	cs, err := kubernetes.NewForConfig(hub)
	if err != nil {
		t.Fatal(err)
	}
	kubectl("apply", "-f", writeFile(t, s.dir, "edge-app.yaml", fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: edge, namespace: demo}
data: {release: "0"}
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: edge
  namespace: demo
  annotations: {app.oam.dev/publishVersion: v0}
spec:
  components:
    - name: edge
      type: ref-objects
      properties:
        objects: [{apiVersion: v1, kind: ConfigMap, name: edge}]
  policies:
    - name: edge
      type: topology
      properties: {clusters: [%q]}
`, prodC)))
	ctx := s.ctx
	for i := 1; i <= 100; i++ {
		patch := fmt.Sprintf(`{"data":{"release":"%d"}}`, i)
		if _, err := cs.CoreV1().ConfigMaps("demo").Patch(ctx, "edge", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		kubectl("annotate", "--overwrite", "app", "edge", "-n", "demo", fmt.Sprintf("app.oam.dev/publishVersion=v%d", i))
	}
	// The hub holds the newest release's work for production before the
	// link returns (so the count below is of what the site then does).
	out := s.eventually(`^v100 [0-9]+$`, "kubectl", "get", "app", "edge", "-n", "demo", "-o", "jsonpath={.status.latestRevision.publishVersion} {.status.latestRevision.revision}")
	rev, err := strconv.ParseInt(strings.Fields(out)[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s.awaitWorkRevision(t, prodC, "edge", rev)
	if out, err := inProd("get", "configmap", "edge", "-n", "demo"); err == nil {
		t.Fatalf("production got a release while cut off:\n%s", out)
	}
	if err := s.env.LinkUp(); err != nil {
		t.Fatal(err)
	}
	back = time.Now()
	s.eventually(`^100$`, "kubectl", "--kubeconfig", prodKubeconfig, "get", "configmap", "edge", "-n", "demo", "-o", "jsonpath={.data.release}")
	t.Logf("link up (blackholed before) -> the newest of 100 releases made while cut off applied in production: %v", time.Since(back).Round(10*time.Millisecond))
	s.eventually(`edge +edge +ref-objects +running +true`, "kubectl", "get", "app", "edge", "-n", "demo")
	t.Logf("link up -> that application running on the hub: %v", time.Since(back).Round(10*time.Millisecond))
	time.Sleep(2 * time.Second)
	if got := s.agentApplies(t, prodC) - baseline; got != 1 {
		t.Errorf("production's agent applied %v times after the link returned, want once (the newest release only)", got)
	}
	s.eventually(`demo +demo +ref-objects +running +true`, "kubectl", "get", "app", "demo", "-n", "demo")
}

// agentApplies is how many work messages a cluster's agent has applied.
func (s *suite) agentApplies(t *testing.T, cluster string) float64 {
	t.Helper()
	resp, err := http.Get(s.env.Metrics["agent-"+cluster])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return metricSum(string(body), "flotilla_agent_work_total", "kind", "apply", "result", "applied")
}

// awaitWorkRevision waits until the hub's work stream holds revision rev
// of an application for a cluster.
func (s *suite) awaitWorkRevision(t *testing.T, cluster, app string, rev int64) {
	t.Helper()
	js := s.adminJetStream(t)
	deadline := time.Now().Add(90 * time.Second)
	var last int64
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		st, err := js.Stream(ctx, bus.StreamWork)
		if err == nil {
			var m *jetstream.RawStreamMsg
			if m, err = st.GetLastMsgForSubject(ctx, bus.WorkSubject(cluster, "demo", app)); err == nil {
				if e, derr := events.DecodeStored(m); derr == nil {
					if w, ok := e.Data.(*events.WorkData); ok {
						last = w.Revision
					}
				}
			}
		}
		cancel()
		if last >= rev {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the hub's work for %s of %s reached revision %d, not %d", app, cluster, last, rev)
}

// adminJetStream is the hub's JetStream as the operator's own login
// (closed with the test).
func (s *suite) adminJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.env.NATSURL, nats.UserCredentials(s.env.Creds("admin")), nats.RootCAs(s.env.TLS.CA))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
