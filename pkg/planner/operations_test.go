package planner_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/cli"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/planner"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// flotilla runs `kubectl flotilla` in-process against the hub.
func (f *fixture) flotilla(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	args = append(args, "--kubeconfig", env.Cluster(testbed.HubName).Kubeconfig, "-n", f.ns)
	if code := cli.Main("kubectl flotilla", args, &out, &errOut); code != 0 {
		return out.String(), &cliError{errOut.String()}
	}
	return out.String(), nil
}

type cliError struct{ msg string }

func (e *cliError) Error() string { return e.msg }

// suspend holds before the next step; resume lets it go; restart runs the
// release again from its first step; terminate ends it.
func TestWorkflowOperations(t *testing.T) {
	f := newFixture(t, "ops")
	f.startPlanner()
	f.applyYAML(f.seed())
	d := stepData(t, f.waitStepEvents("demo", 1)[0])

	if out, err := f.flotilla("workflow", "suspend", "demo"); err != nil || out != "Successfully suspend workflow: demo\n" {
		t.Fatalf("suspend: %q %v", out, err)
	}
	f.report(d, "c-test", events.ClusterApplied, events.HealthCurrent, "")
	app := f.waitApp("demo", "held before deploy-prod", func(a *v1beta1.Application) bool {
		c := meta.FindStatusCondition(a.Status.Conditions, planner.ConditionReady)
		return c != nil && c.Reason == "SuspendedByUser"
	})
	if app.Status.Phase != v1beta1.PhaseWorkflowSuspending || app.Status.Workflow.Steps[1].Phase != v1beta1.StepPending || !app.Status.Workflow.Suspend {
		t.Fatalf("held: phase %s, deploy-prod %s", app.Status.Phase, app.Status.Workflow.Steps[1].Phase)
	}
	if got := summary(f.stepEvents("demo")); !slices.Equal(got, []string{"started deploy-test", "succeeded deploy-test"}) {
		t.Errorf("a held workflow started a step: %v", got)
	}

	// No step waits for approval: resume lets the held workflow go on.
	if out, err := f.flotilla("workflow", "resume", "demo"); err != nil || out != "Successfully resume workflow: demo\n" {
		t.Fatalf("resume: %q %v", out, err)
	}
	f.waitStepEvents("demo", 3) // suspended deploy-prod: now waiting for approval

	if out, err := f.flotilla("workflow", "restart", "demo"); err != nil || out != "Successfully restart workflow: demo\n" {
		t.Fatalf("restart: %q %v", out, err)
	}
	restarted := eventAt(t, f.waitStepEvents("demo", 4), 3)
	if got := summary([]*events.Event{restarted}); got[0] != "started deploy-test" || stepData(t, restarted).Attempt != 1 {
		t.Fatalf("restart published %v (attempt %d)", got, stepData(t, restarted).Attempt)
	}

	// Terminate a running workflow (no step waits): workflowTerminated, with who.
	if out, err := f.flotilla("workflow", "terminate", "demo", "--reason", "bad build"); err != nil || out != "Successfully terminate workflow: demo\n" {
		t.Fatalf("terminate: %q %v", out, err)
	}
	app = f.waitApp("demo", "terminated", phaseIs(v1beta1.PhaseWorkflowTerminated))
	// Who: the name the hub authenticates the CLI's user as.
	cs, err := kubernetes.NewForConfig(env.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	self, err := cs.AuthenticationV1().SelfSubjectReviews().Create(f.ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	who := self.Status.UserInfo.Username
	if msg := app.Status.Workflow.Steps[0].Message; who == "" || !strings.Contains(msg, "terminated by "+who) || !strings.Contains(msg, "bad build") {
		t.Errorf("terminated step message %q, want it to name %q and the reason", msg, who)
	}
	if op := app.Status.Workflow.LastOperation; op == nil || op.Type != v1beta1.OperationTerminate || op.User != who || !op.Succeeded {
		t.Errorf("last operation %+v, want a terminate by %q", op, who)
	}
	// Operations on a finished workflow say why they cannot.
	if _, err := f.flotilla("workflow", "suspend", "demo"); err == nil || !strings.Contains(err.Error(), "has finished") {
		t.Errorf("suspend of a finished workflow: %v", err)
	}
	if _, err := f.flotilla("workflow", "rollback", "demo"); err == nil || !strings.Contains(err.Error(), "nothing to roll back to") {
		t.Errorf("rollback without an earlier successful release: %v", err)
	}
}
