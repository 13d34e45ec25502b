package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bundle"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
)

// handCarried exports the production cluster's work as an operator would
// for a site with no link, and puts it where the site's agent reads
// bundles: it applies it (the release it has: nothing changes) and files
// it under applied/. The CLI's own NATS login may not export: work holds
// Secrets.
func (s *suite) handCarried(t *testing.T, cluster string) {
	t.Helper()
	file := filepath.Join(s.dir, "prod.bundle")
	out, err := s.runAs("cli", "kubectl", "flotilla", "bundle", "export", "--cluster", cluster, "-o", file)
	if err == nil {
		t.Errorf("bundle export with the CLI's login succeeded:\n%s", out)
	} else {
		t.Logf("bundle export with the CLI's login: %s", strings.TrimSpace(out))
	}
	if _, err := os.Stat(file); err == nil {
		t.Errorf("bundle export with the CLI's login wrote %s", file)
	}
	out, err = s.runAs("bundler", "kubectl", "flotilla", "bundle", "export", "--cluster", cluster, "demo/demo", "-o", file)
	if err != nil {
		t.Fatalf("bundle export: %v\n%s", err, out)
	}
	matchLines(t, out, `bundle .*prod.bundle: 1 work message\(s\) of cluster `+cluster+`, sha256:[0-9a-f]{64}`)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b.Cluster != cluster || len(b.Messages) != 1 {
		t.Fatalf("bundle of %s with %d messages", b.Cluster, len(b.Messages))
	}
	dir := s.env.BundleDir(cluster)
	if err := os.Rename(file, filepath.Join(dir, "prod.bundle")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 30*time.Second, "the site's agent to apply the bundle", func() (bool, error) {
		_, err := os.Stat(filepath.Join(dir, "applied", "prod.bundle"))
		if reason, rerr := os.ReadFile(filepath.Join(dir, "refused", "prod.reason")); rerr == nil {
			t.Fatalf("the bundle was refused: %s", reason)
		}
		return err == nil, err
	})
}

// A site with no link at all: a release made at the hub reaches
// production on a bundle carried by hand, and production's status comes
// back on the status bundle its agent writes — the application runs on
// the hub while the link is still down. A status bundle signed with
// another key counts for nothing.
func TestFullyDisconnectedSite(t *testing.T) {
	s := setup(t)
	prodC := s.env.Clusters[1]
	if prodC != s.env.SiteCluster {
		t.Fatalf("production %s is not the cluster at the site (%s)", prodC, s.env.SiteCluster)
	}
	kubectl := func(args ...string) string { t.Helper(); return s.must("kubectl", args...) }
	prodKubeconfig := filepath.Join(s.dir, "kubeconfig", prodC)
	if err := s.env.LinkDown(linkproxy.Reset); err != nil {
		t.Fatal(err)
	}
	s.eventually(`^Unknown SiteLinkDown$`, "kubectl", "get", "managedcluster", prodC, "-o",
		`jsonpath={.status.conditions[?(@.type=="ManagedClusterConditionAvailable")].status} {.status.conditions[?(@.type=="ManagedClusterConditionAvailable")].reason}`)
	kubectl("create", "namespace", "demo")
	kubectl("apply", "-f", writeFile(t, s.dir, "cargo.yaml", fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: cargo, namespace: demo}
data: {release: "1"}
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: cargo, namespace: demo}
spec:
  components:
    - name: cargo
      type: ref-objects
      properties:
        objects: [{apiVersion: v1, kind: ConfigMap, name: cargo}]
  policies:
    - name: prod
      type: topology
      properties: {clusters: [%q]}
`, prodC)))
	out := s.eventually(`^[0-9]+$`, "kubectl", "get", "app", "cargo", "-n", "demo", "-o", "jsonpath={.status.latestRevision.revision}")
	rev, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s.awaitWorkRevision(t, prodC, "cargo", rev)

	// Carried by hand: export at the hub, into the site agent's directory.
	file := filepath.Join(s.dir, "cargo.bundle")
	s.mustAs("bundler", "kubectl", "flotilla", "bundle", "export", "--cluster", prodC, "demo/cargo", "-o", file)
	carried := time.Now()
	dir := s.env.BundleDir(prodC)
	if err := os.Rename(file, filepath.Join(dir, "cargo.bundle")); err != nil {
		t.Fatal(err)
	}
	s.eventually(`^1$`, "kubectl", "--kubeconfig", prodKubeconfig, "get", "configmap", "cargo", "-n", "demo", "-o", "jsonpath={.data.release}")
	t.Logf("bundle in the site's directory -> applied in production, the link down: %v", time.Since(carried).Round(10*time.Millisecond))

	// Its agent's status bundle says so; carried back and imported, the
	// hub takes its report while the link is still down.
	statusFile := filepath.Join(dir, "outbox", "status.bundle")
	var data []byte
	eventually.True(t, 30*time.Second, "the site's agent to write its status bundle with cargo applied", func() (bool, error) {
		if data, err = os.ReadFile(statusFile); err != nil {
			return false, err
		}
		sb, err := bundle.DecodeStatus(data)
		if err != nil {
			return false, err
		}
		for _, m := range sb.Messages {
			if e, err := events.Decode(m.Msg()); err == nil {
				if d, ok := e.Data.(*events.ClusterStatusData); ok && d.Application == "cargo" && d.Phase == events.ClusterApplied && d.Healthy() {
					return true, nil
				}
			}
		}
		return false, fmt.Errorf("no healthy report of cargo in %d messages", len(sb.Messages))
	})
	// Signed anew with a key that is not the cluster's: refused.
	forged := forgeStatus(t, data)
	forgedFile := writeFile(t, s.dir, "forged.bundle", string(forged))
	s.mustAs("bundler", "kubectl", "flotilla", "bundle", "import", forgedFile)
	if up, _ := s.env.Link(); up {
		t.Fatal("the link came back")
	}
	carriedBack := filepath.Join(s.dir, "status.bundle")
	if err := os.WriteFile(carriedBack, data, 0o600); err != nil {
		t.Fatal(err)
	}
	imported := time.Now()
	matchLines(t, s.mustAs("bundler", "kubectl", "flotilla", "bundle", "import", carriedBack),
		`status bundle of cluster `+prodC+` \([0-9]+ messages, written .*\) sent to the hub`)
	// The offline report completes the step; the hub, which cannot see
	// the cluster now, still does not call its health true.
	out = s.eventually(`^succeeded `, "kubectl", "get", "app", "cargo", "-n", "demo", "-o", "jsonpath={.status.workflow.steps[0].phase} {.status.status} {.status.services[0].message}")
	t.Logf("status bundle imported -> the step succeeded on the hub, the link down: %v (%s)", time.Since(imported).Round(10*time.Millisecond), strings.TrimSpace(out))
	if !strings.Contains(out, "SiteLinkDown") {
		t.Errorf("with the link down the application says %q, want its health unknown (SiteLinkDown)", out)
	}
	// Its link back, the hub sees it again.
	if err := s.env.LinkUp(); err != nil {
		t.Fatal(err)
	}
	s.eventually(`cargo +cargo +ref-objects +running +true`, "kubectl", "get", "app", "cargo", "-n", "demo")
	planner, _ := os.ReadFile(filepath.Join(s.dir, "logs", "planner.log"))
	if !strings.Contains(string(planner), "status bundle refused") || !strings.Contains(string(planner), "not the cluster's") {
		t.Errorf("the planner did not refuse the forged status bundle:\n%s", planner)
	}
}

// forgeStatus re-signs a status bundle's messages with a fresh key.
func forgeStatus(t *testing.T, data []byte) []byte {
	t.Helper()
	s, err := bundle.DecodeStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := bundle.NewStatus(s.Cluster, kp, time.Now(), s.Messages)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := forged.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
