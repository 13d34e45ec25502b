package planner_test

import (
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// setAvailable writes a ManagedCluster's AVAILABLE condition, as the
// dispatcher does when heartbeats stop and when they come back.
func (f *fixture) setAvailable(cluster, status, reason, msg string) {
	f.t.Helper()
	patch := `{"status":{"conditions":[{"type":"ManagedClusterConditionAvailable","status":"` + status + `","reason":"` + reason +
		`","message":"` + msg + `","lastTransitionTime":"2026-12-02T12:00:00Z"}]}}`
	f.kubectl("patch", "managedcluster", cluster, "--subresource=status", "--type=merge", "-p", patch)
}

// A cluster the hub stops hearing from: the Application's health there is
// unknown, since when and why (not its last report, which said healthy),
// and known again once the cluster is.
func TestCutOffClusterHealthIsUnknown(t *testing.T) {
	f := newFixture(t, "cutoff")
	f.startPlanner()
	f.applyYAML(strings.NewReplacer("<clusterid1>", "cutoff-test", "<clusterid2>", "cutoff-prod").Replace(f.seed()))
	started := f.waitStepEvents("demo", 1)
	f.report(stepData(t, started[0]), "cutoff-test", events.ClusterApplied, events.HealthCurrent, "")
	f.waitApp("demo", "waiting for approval, healthy in test", func(a *v1beta1.Application) bool {
		return a.Status.Phase == v1beta1.PhaseWorkflowSuspending && len(a.Status.Services) == 1 && a.Status.Services[0].Healthy
	})

	f.setAvailable("cutoff-test", "Unknown", "ManagedClusterLeaseUpdateStopped", "no heartbeat for 6s")
	want := "health unknown: cluster cutoff-test is unavailable since 2026-12-02T12:00:00Z (ManagedClusterLeaseUpdateStopped)"
	f.waitApp("demo", "health unknown in the cut-off cluster", func(a *v1beta1.Application) bool {
		return len(a.Status.Services) == 1 && !a.Status.Services[0].Healthy && a.Status.Services[0].Message == want
	})

	f.setAvailable("cutoff-test", "True", "ManagedClusterAvailable", "heartbeats arrive")
	f.waitApp("demo", "healthy again once the cluster is back", func(a *v1beta1.Application) bool {
		return len(a.Status.Services) == 1 && a.Status.Services[0].Healthy && a.Status.Services[0].Message == ""
	})

	// Gone from the hub: nothing it said counts any more.
	f.kubectl("delete", "managedcluster", "cutoff-test")
	f.waitApp("demo", "health unknown once the hub no longer has the cluster", func(a *v1beta1.Application) bool {
		return len(a.Status.Services) == 1 && !a.Status.Services[0].Healthy &&
			a.Status.Services[0].Message == "health unknown: cluster cutoff-test is unavailable (ManagedClusterDeleted)"
	})
}
