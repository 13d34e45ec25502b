package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/devenv"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
)

// Two replicas of each hub service (make up REPLICAS=2), sharing their
// consumers: the seed's release goes through with the first replica of
// each killed -9 while it waits for approval (the second carries on; the
// supervisor starts the first again), and each cluster's agent applies
// the release once.
func TestTwoReplicasOfEachService(t *testing.T) {
	s := setupWith(t, devenv.Options{Replicas: 2, NATSNodes: 3})
	testC, prodC := s.env.Clusters[0], s.env.Clusters[1]
	kubectl := func(args ...string) string { t.Helper(); return s.must("kubectl", args...) }
	for _, name := range []string{"planner-2", "dispatcher-2", "gate-2", "nats-server-2", "nats-server-3"} {
		if p := s.env.Process(name); p == nil || p.Exited() {
			t.Fatalf("%s is not running", name)
		}
	}
	s.checkReplicated(t, 3)
	kubectl("create", "namespace", "demo")
	kubectl("apply", "-f", "examples/seed/app-meta.yaml")
	policies := strings.NewReplacer("<clusterid1>", testC, "<clusterid2>", prodC).Replace(readFile(t, filepath.Join(s.root, "examples/seed/policy-topology.yaml")))
	kubectl("apply", "-f", writeFile(t, s.dir, "policy-topology.yaml", policies))
	kubectl("apply", "-f", "examples/seed/workflow.yaml")
	kubectl("apply", "-f", "examples/seed/app.yaml")
	s.eventually(`workflowSuspending +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", testC)

	// The first replica of each service and one NATS node, killed.
	for _, name := range []string{"planner", "dispatcher", "gate", "nats-server-3"} {
		if _, err := s.env.Kill(name); err != nil {
			t.Fatal(err)
		}
	}
	resumed := time.Now()
	matchLines(t, s.must("kubectl", "amc", "workflow", "resume", "demo", "-n", "demo"), `Successfully resume workflow: demo`)
	s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC)
	s.eventually(`demo +demo +ref-objects +running +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	t.Logf("first replicas killed, resume -> running on the second: %v", time.Since(resumed).Round(10*time.Millisecond))
	eventually.True(t, 30*time.Second, "the killed replicas started again", func() (bool, error) {
		for _, name := range []string{"planner", "dispatcher", "gate", "nats-server-3"} {
			if s.env.Restarts(name) != 1 || s.env.Process(name).Exited() {
				return false, nil
			}
		}
		return true, nil
	})
	for _, c := range []string{testC, prodC} {
		if got := s.agentApplies(t, c); got != 1 {
			t.Errorf("%s's agent applied the release %v times, want once", c, got)
		}
	}
	if died := s.env.Died(); len(died) > 0 {
		t.Errorf("processes died: %v", died)
	}
}

// checkReplicated checks the hub's streams have n replicas.
func (s *suite) checkReplicated(t *testing.T, n int) {
	t.Helper()
	js := s.adminJetStream(t)
	eventually.True(t, 2*time.Minute, "the hub's streams replicated", func() (bool, error) {
		for _, name := range []string{bus.StreamSteps, bus.StreamWork, bus.StreamStatus, bus.KVStream(bus.BucketRuns)} {
			// Each ask on its own deadline: a cluster busy electing may
			// leave one unanswered.
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			st, err := js.Stream(ctx, name)
			cancel()
			if err != nil {
				return false, err
			}
			if got := st.CachedInfo().Config.Replicas; got != n {
				return false, fmt.Errorf("%s has %d replicas", name, got)
			}
		}
		return true, nil
	})
}
