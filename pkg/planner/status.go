package planner

import (
	"cmp"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// ConditionReady is the Application's summary condition.
const ConditionReady = "Ready"

// Reasons of the Ready condition besides the release and workflow ones.
const (
	ReasonSucceeded   = "Succeeded"
	ReasonProgressing = "Progressing"
	ReasonUnhealthy   = "Unhealthy"
	ReasonDeleting    = "Deleting"
	ReasonStepFailed  = "StepFailed"
	// ReasonClusterUnavailable: a cluster the release runs in is cut off,
	// so its health is not known.
	ReasonClusterUnavailable = "ClusterUnavailable"
)

// computeStatus derives the Application's status from its record, or from
// the problem that keeps a release from starting, as of now (a condition
// that changes status says since when), with the outages of the clusters
// it runs in (their health unknown, never the stale last report). It is
// pure, and the result is written once per change.
func computeStatus(app *v1beta1.Application, rec *Record, refused *problem.Error, now time.Time, outages map[string]Outage) v1beta1.AppStatus {
	st := v1beta1.AppStatus{
		Conditions:         append([]metav1.Condition(nil), app.Status.Conditions...),
		ObservedGeneration: app.Generation,
	}
	ready := metav1.Condition{Type: ConditionReady, ObservedGeneration: app.Generation}
	if rec != nil && rec.Run != nil {
		run := rec.Run
		st.LatestRevision = &v1beta1.Revision{Name: run.Release, Revision: run.Revision, PublishVersion: run.PublishVersion, Digest: rec.Snapshot.Digest}
		st.Workflow = workflowStatus(run)
		st.Workflow.LastOperation = rec.LastOperation
		// A resume request waits for the gate while its step still waits.
		if prev := app.Status.Workflow; prev != nil && prev.Resume != nil {
			if s := currentStep(run); s != nil && s.Phase == workflow.StepSuspending && s.Name == prev.Resume.Step {
				st.Workflow.Resume = prev.Resume.DeepCopy()
			}
		}
		st.Services = services(app, run, outages)
		st.Phase, ready = runPhase(app, run, ready, outages)
	}
	switch {
	case app.DeletionTimestamp != nil:
		st.Phase = v1beta1.PhaseDeleting
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonDeleting
		ready.Message = "removing the application from its clusters"
		if rec != nil && len(rec.Placed) > 0 {
			ready.Message = fmt.Sprintf("waiting for %d of %d clusters to confirm removal", len(rec.Placed)-len(rec.Deleted), len(rec.Placed))
		}
	case refused != nil:
		st.Phase = v1beta1.PhaseWorkflowFailed
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, refused.Reason, refused.Message
	case rec == nil:
		st.Phase = v1beta1.PhaseStarting
		ready.Status, ready.Reason, ready.Message = metav1.ConditionUnknown, ReasonProgressing, "cutting the first release"
	}
	ready.LastTransitionTime = metav1.NewTime(now).Rfc3339Copy()
	meta.SetStatusCondition(&st.Conditions, ready)
	return st
}

func runPhase(app *v1beta1.Application, run *workflow.Run, ready metav1.Condition, outages map[string]Outage) (v1beta1.ApplicationPhase, metav1.Condition) {
	ready.Status = metav1.ConditionFalse
	switch run.Phase {
	case workflow.RunSuspending:
		ready.Reason, ready.Message = workflow.ReasonWaitingApproval, run.Message
		if s := currentStep(run); s != nil && s.Reason != "" {
			ready.Reason = s.Reason
		} else if run.HeldBy != "" {
			ready.Reason = workflow.ReasonHeld
		}
		return v1beta1.PhaseWorkflowSuspending, ready
	case workflow.RunFailed:
		ready.Reason, ready.Message = ReasonStepFailed, run.Message
		return v1beta1.PhaseWorkflowFailed, ready
	case workflow.RunTerminated:
		ready.Reason, ready.Message = workflow.ReasonTerminated, run.Message
		return v1beta1.PhaseWorkflowTerminated, ready
	case workflow.RunSucceeded:
		for _, c := range run.DeployedClusters() {
			if o, down := outages[c]; down {
				ready.Status, ready.Reason, ready.Message = metav1.ConditionUnknown, ReasonClusterUnavailable, healthUnknown(c, o)
				return v1beta1.PhaseUnhealthy, ready
			}
		}
		for _, c := range run.DeployedClusters() {
			if h := run.Health[c]; !h.Healthy {
				ready.Reason, ready.Message = ReasonUnhealthy, fmt.Sprintf("cluster %s: %s", c, cmp.Or(h.Message, "not healthy"))
				return v1beta1.PhaseUnhealthy, ready
			}
		}
		ready.Status, ready.Reason = metav1.ConditionTrue, ReasonSucceeded
		ready.Message = fmt.Sprintf("release %s runs healthy in %d clusters", run.Release, len(run.DeployedClusters()))
		return v1beta1.PhaseRunning, ready
	}
	ready.Reason, ready.Message = ReasonProgressing, fmt.Sprintf("running workflow of release %s", run.Release)
	if s := currentStep(run); s != nil {
		ready.Message = fmt.Sprintf("running step %q of release %s", s.Name, run.Release)
	}
	return v1beta1.PhaseRunningWorkflow, ready
}

func currentStep(run *workflow.Run) *workflow.Step {
	for i := range run.Steps {
		if p := run.Steps[i].Phase; p != workflow.StepSucceeded && p != workflow.StepSkipped {
			return &run.Steps[i]
		}
	}
	return nil
}

// services is one entry per component and cluster the release was sent to.
// Message is empty when healthy, as the seed's STATUS column shows.
func services(app *v1beta1.Application, run *workflow.Run, outages map[string]Outage) []v1beta1.ApplicationComponentStatus {
	var out []v1beta1.ApplicationComponentStatus
	for _, c := range run.DeployedClusters() {
		h, reported := run.Health[c]
		msg := h.Message
		o, down := outages[c]
		switch {
		case down:
			h.Healthy, msg = false, healthUnknown(c, o)
		case !reported:
			msg = "waiting for the cluster to report"
		case !h.Healthy && msg == "":
			msg = "not healthy"
		case h.Healthy:
			msg = ""
		}
		for _, comp := range app.Spec.Components {
			out = append(out, v1beta1.ApplicationComponentStatus{Name: comp.Name, Namespace: app.Namespace, Cluster: c, Healthy: h.Healthy, Message: msg})
		}
	}
	return out
}

// healthUnknown says a cluster's health is not known, since when and why.
func healthUnknown(cluster string, o Outage) string {
	msg := fmt.Sprintf("health unknown: cluster %s is unavailable", cluster)
	if !o.Since.IsZero() {
		msg += " since " + o.Since.UTC().Format(time.RFC3339)
	}
	if o.Reason != "" {
		msg += " (" + o.Reason + ")"
	}
	return msg
}

func workflowStatus(run *workflow.Run) *v1beta1.WorkflowStatus {
	ws := &v1beta1.WorkflowStatus{
		AppRevision: run.Release,
		Mode:        "StepByStep",
		Phase:       string(run.Phase),
		Message:     run.Message,
		Suspend:     run.Phase == workflow.RunSuspending,
		Terminated:  run.Phase == workflow.RunTerminated,
		Finished:    run.Finished(),
		StartTime:   apiTime(run.Start),
		EndTime:     apiTime(run.End),
	}
	for i, s := range run.Steps {
		var approvals []v1beta1.Approval
		for _, a := range s.Approvals {
			approvals = append(approvals, v1beta1.Approval{Approver: a.Approver, Decision: a.Decision, Via: a.Via, Reason: a.Reason, Time: *apiTime(a.Time)})
		}
		ws.Steps = append(ws.Steps, v1beta1.StepStatus{
			Approvals:        approvals,
			ID:               fmt.Sprintf("%s-%d", run.Release, i),
			Name:             s.Name,
			Type:             s.Type,
			Phase:            v1beta1.StepPhase(s.Phase),
			Message:          s.Message,
			Reason:           s.Reason,
			FirstExecuteTime: apiTime(s.FirstExecuteTime),
			LastExecuteTime:  apiTime(s.LastExecuteTime),
		})
	}
	return ws
}

// apiTime is t as the API stores it (seconds), so an unchanged status
// compares equal to what was read back and is not written again.
func apiTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t).Rfc3339Copy()
	return &mt
}
