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
	resume := &cobra.Command{
		Use:     "resume APP",
		Short:   "Approve the step the application's workflow waits on",
		Example: "  kubectl flotilla workflow resume demo -n demo",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.decide(cmd.Context(), args[0], step, events.DecisionApprove, reason, timeout); err != nil {
				return err
			}
			fmt.Fprintf(o.IO.Out, "Successfully resume workflow: %s\n", args[0])
			return nil
		},
	}
	terminate := &cobra.Command{
		Use:   "terminate APP",
		Short: "Reject the waiting step: the workflow ends as workflowTerminated",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.decide(cmd.Context(), args[0], step, events.DecisionReject, reason, timeout); err != nil {
				return err
			}
			fmt.Fprintf(o.IO.Out, "Successfully terminate workflow: %s\n", args[0])
			return nil
		},
	}
	for _, c := range []*cobra.Command{resume, terminate} {
		c.Flags().StringVar(&step, "step", "", "the waiting step (default: the one that waits)")
		c.Flags().StringVar(&reason, "reason", "", "why, recorded with the decision")
		c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the gate to record the decision")
	}
	cmd.AddCommand(resume, terminate)
	return cmd
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
		return fmt.Errorf("application %s/%s is not waiting for approval (phase %q)", ns, name, app.Status.Phase)
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
	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	req := v1beta1.ResumeRequest{ID: hex.EncodeToString(idb), Step: step, Decision: decision, User: review.Status.UserInfo.Username,
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
