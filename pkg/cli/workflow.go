package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	clusterv1 "github.com/flotilla-dev/flotilla/pkg/api/cluster/v1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

func newWorkflow(o *Options) *cobra.Command {
	cmd := &cobra.Command{Use: "workflow", Short: "Operate an application's workflow"}
	var step, reason string
	var timeout time.Duration
	verb := func(use, short, example string, run func(ctx context.Context, app string) error) *cobra.Command {
		c := &cobra.Command{
			Use: use + " APP", Short: short, Example: example, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := run(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(o.IO.Out, "Successfully %s workflow: %s\n", use, args[0])
				return nil
			},
		}
		c.Flags().StringVar(&reason, "reason", "", "why, recorded with the decision")
		c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for Flotilla to carry it out")
		return c
	}
	resume := verb("resume", "Approve the step the workflow waits on, or let a suspended workflow go on",
		"  kubectl flotilla workflow resume demo -n demo", func(ctx context.Context, app string) error {
			return o.decideOrOperate(ctx, app, step, events.DecisionApprove, v1beta1.OperationResume, reason, timeout)
		})
	terminate := verb("terminate", "End the workflow: a waiting step is rejected; the application goes workflowTerminated",
		"  kubectl flotilla workflow terminate demo -n demo --reason 'error budget spent'", func(ctx context.Context, app string) error {
			return o.decideOrOperate(ctx, app, step, events.DecisionReject, v1beta1.OperationTerminate, reason, timeout)
		})
	for _, c := range []*cobra.Command{resume, terminate} {
		c.Flags().StringVar(&step, "step", "", "the waiting step (default: the one that waits)")
	}
	suspend := verb("suspend", "Hold the workflow before its next step (a running step goes on)",
		"  kubectl flotilla workflow suspend demo -n demo", func(ctx context.Context, app string) error {
			return o.operate(ctx, app, v1beta1.OperationSuspend, reason, timeout)
		})
	restart := verb("restart", "Run the current release's workflow again from its first step",
		"  kubectl flotilla workflow restart demo -n demo", func(ctx context.Context, app string) error {
			return o.operate(ctx, app, v1beta1.OperationRestart, reason, timeout)
		})
	rollback := verb("rollback", "Roll back to the previous release whose workflow succeeded, through the same workflow",
		"  kubectl flotilla workflow rollback demo -n demo", func(ctx context.Context, app string) error {
			return o.operate(ctx, app, v1beta1.OperationRollback, reason, timeout)
		})
	cmd.AddCommand(resume, suspend, terminate, restart, rollback)
	return cmd
}

// decideOrOperate decides the waiting step through the gate, or, when no
// step waits, operates the workflow (resume a suspended one, terminate).
func (o *Options) decideOrOperate(ctx context.Context, app, step, decision, operation, reason string, timeout time.Duration) error {
	err := o.decide(ctx, app, step, decision, reason, timeout)
	if !errors.Is(err, errNotWaiting) {
		return err
	}
	return o.operate(ctx, app, operation, reason, timeout)
}

var errNotWaiting = errors.New("not waiting for approval")

// operate writes an operation request on the Application's status (the
// hub's RBAC says who may) and waits for the planner's outcome.
func (o *Options) operate(ctx context.Context, name, operation, reason string, timeout time.Duration) error {
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	dyn, cs, err := o.clients()
	if err != nil {
		return err
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("who am I (SelfSubjectReview): %w", err)
	}
	op := v1beta1.WorkflowOperation{ID: newID(), Type: operation, User: review.Status.UserInfo.Username, Reason: reason, Time: metav1.Now().Rfc3339Copy()}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"workflow": map[string]any{"operation": op}}})
	apps := dyn.Resource(v1beta1.ApplicationResource).Namespace(ns)
	if _, err := apps.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-flotilla"}, "status"); err != nil {
		return fmt.Errorf("%s workflow of %s/%s (needs RBAC to update applications/status): %w", operation, ns, name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		u, err := apps.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			app := &v1beta1.Application{}
			if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app) == nil && app.Status.Workflow != nil {
				if r := app.Status.Workflow.LastOperation; r != nil && r.ID == op.ID {
					if !r.Succeeded {
						return fmt.Errorf("cannot %s: %s", operation, r.Message)
					}
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the planner did not carry out %s in time: is it running? (kubectl get app %s -n %s -o yaml)", operation, name, ns)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// decide writes a resume request on the Application's status (the hub's
// RBAC says who may) and waits for the gate to record or refuse it.
func (o *Options) decide(ctx context.Context, name, step, decision, reason string, timeout time.Duration) error {
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	dyn, cs, err := o.clients()
	if err != nil {
		return err
	}
	apps := dyn.Resource(v1beta1.ApplicationResource).Namespace(ns)
	u, err := apps.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get application %s/%s: %w", ns, name, err)
	}
	app := &v1beta1.Application{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, app); err != nil {
		return err
	}
	waitingStep := ""
	if wf := app.Status.Workflow; wf != nil {
		for _, s := range wf.Steps {
			if s.Phase == v1beta1.StepSuspending {
				waitingStep = s.Name
			}
		}
	}
	if waitingStep == "" {
		return fmt.Errorf("application %s/%s is %w (phase %q)", ns, name, errNotWaiting, app.Status.Phase)
	}
	if step == "" {
		step = waitingStep
	} else if step != waitingStep {
		return fmt.Errorf("step %q of %s/%s is not waiting; %q is", step, ns, name, waitingStep)
	}
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("who am I (SelfSubjectReview): %w", err)
	}
	req := v1beta1.ResumeRequest{ID: newID(), Step: step, Release: app.Status.Workflow.AppRevision, Decision: decision, User: review.Status.UserInfo.Username,
		Groups: review.Status.UserInfo.Groups, Reason: reason, Time: metav1.Now().Rfc3339Copy()}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"workflow": map[string]any{"resume": req}}})
	if _, err := apps.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-flotilla"}, "status"); err != nil {
		return fmt.Errorf("request approval of %s/%s (needs RBAC to update applications/status): %w", ns, name, err)
	}
	return waitDecision(ctx, cs, dyn, ns, name, "cli."+req.ID, timeout)
}

// waitDecision waits for the gate's Kubernetes Event about decision id.
func waitDecision(ctx context.Context, cs kubernetes.Interface, _ dynamic.Interface, ns, app, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + app})
		if err == nil {
			for _, e := range evs.Items {
				if e.Annotations[v1beta1.AnnotationDecisionID] != id {
					continue
				}
				if e.Reason == "ApprovalRefused" {
					return fmt.Errorf("the gate refused: %s", e.Message)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("the gate did not record the decision in time: is the gate running? (kubectl describe app " + app + " -n " + ns + ")")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newCluster(o *Options) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Manage the clusters that joined the hub"}
	accept := &cobra.Command{
		Use:     "accept NAME [NAME...]",
		Short:   "Accept clusters whose agents asked to join: they start receiving work",
		Example: "  kubectl flotilla cluster accept managedcluster-c5x9z9",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dyn, _, err := o.clients()
			if err != nil {
				return err
			}
			for _, name := range args {
				_, err := dyn.Resource(clusterv1.ManagedClusterResource).Patch(cmd.Context(), name, types.MergePatchType,
					[]byte(`{"spec":{"hubAcceptsClient":true}}`), metav1.PatchOptions{FieldManager: "kubectl-flotilla"})
				if err != nil {
					return fmt.Errorf("accept cluster %s: %w", name, err)
				}
				fmt.Fprintf(o.IO.Out, "managedcluster.cluster.open-cluster-management.io/%s accepted\n", name)
			}
			return nil
		},
	}
	cmd.AddCommand(accept)
	return cmd
}
