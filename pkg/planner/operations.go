package planner

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/trace"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// pendingOperation is the Application's operation request that this
// record has not carried out yet, or nil.
func pendingOperation(app *v1beta1.Application, rec *Record) *v1beta1.WorkflowOperation {
	if app.Status.Workflow == nil || app.Status.Workflow.Operation == nil || rec == nil || rec.Run == nil {
		return nil
	}
	op := app.Status.Workflow.Operation
	if op.ID == "" || rec.LastOperation != nil && rec.LastOperation.ID == op.ID {
		return nil
	}
	return op
}

// operate carries out a workflow operation on the pass's record and
// records its outcome. It returns the step transitions it caused.
func (p *Planner) operate(ctx context.Context, ps *pass, op *v1beta1.WorkflowOperation) []workflow.Transition {
	rec, now := ps.rec, p.now()
	result := &v1beta1.OperationResult{ID: op.ID, Type: op.Type, User: op.User, Succeeded: true, Time: metav1.NewTime(now).Rfc3339Copy()}
	rec.LastOperation = result
	fail := func(format string, args ...any) []workflow.Transition {
		result.Succeeded, result.Message = false, fmt.Sprintf(format, args...)
		return nil
	}
	run := rec.Run
	switch op.Type {
	case v1beta1.OperationSuspend:
		if run.Finished() {
			return fail("the workflow of %s has finished (%s): nothing to suspend", run.Release, run.Phase)
		}
		result.Message = "the workflow holds before its next step"
		return run.Apply(now, workflow.Hold{By: op.User})
	case v1beta1.OperationResume:
		if run.HeldBy == "" {
			return fail("the workflow of %s is not suspended by a person; a waiting step is approved with the gate", run.Release)
		}
		return run.Apply(now, workflow.Unhold{})
	case v1beta1.OperationTerminate:
		if run.Finished() {
			return fail("the workflow of %s has finished (%s)", run.Release, run.Phase)
		}
		return run.Apply(now, workflow.Terminate{By: op.User, Reason: op.Reason})
	case v1beta1.OperationRestart:
		if !rec.TraceDone && !run.Finished() {
			ps.fx.add(p.endRelease(rec, "restarted"))
		}
		rec.Run = run.Restart(now)
		p.startTrace(rec)
		ps.fx.started++
		result.Message = fmt.Sprintf("workflow of %s restarted from its first step (run %d)", run.Release, rec.Run.Attempt+1)
		return nil
	case v1beta1.OperationRollback:
		return p.rollback(ctx, ps, result)
	}
	return fail("unknown operation %q", op.Type)
}

// rollback cuts a new release from the newest earlier release whose
// workflow succeeded, byte for byte its snapshot, and runs the workflow.
func (p *Planner) rollback(ctx context.Context, ps *pass, result *v1beta1.OperationResult) []workflow.Transition {
	app, rec := ps.app, ps.rec
	var target *ReleaseInfo
	for i := len(rec.Releases) - 1; i >= 0; i-- {
		if r := rec.Releases[i]; r.Succeeded && r.Revision < rec.Run.Revision && r.Snapshot.Digest != rec.Snapshot.Digest {
			target = &rec.Releases[i]
			break
		}
	}
	if target == nil {
		result.Succeeded, result.Message = false, "no earlier release succeeded: nothing to roll back to"
		return nil
	}
	revision := rec.Run.Revision + 1
	snap, err := snapshot.Copy(ctx, p.snaps, target.Snapshot, app.Namespace, app.Name, revision)
	if err != nil {
		result.Succeeded, result.Message = false, fmt.Sprintf("copy the snapshot of release v%d: %v", target.Revision, err)
		return nil
	}
	var specs []workflow.StepSpec
	for _, s := range rec.Run.Steps {
		specs = append(specs, s.StepSpec)
	}
	ref := events.AppRef{Namespace: app.Namespace, Application: app.Name, UID: string(app.UID),
		Release: fmt.Sprintf("%s-v%d", app.Name, revision), Revision: revision, PublishVersion: target.PublishVersion}
	rec.Snapshot = snap
	if !rec.TraceDone && !rec.Run.Finished() {
		ps.fx.add(p.endRelease(rec, "superseded"))
	}
	rec.Run = workflow.NewRun(ref, specs, p.now())
	p.startTrace(rec)
	ps.fx.started++
	rec.Releases = append(rec.Releases, ReleaseInfo{Revision: revision, PublishVersion: target.PublishVersion, Snapshot: rec.Snapshot, Created: p.now()})
	ps.pruned = append(ps.pruned, rec.keepNewest()...)
	result.Message = fmt.Sprintf("release %s rolls back to the objects of release v%d (%s)", ref.Release, target.Revision, target.PublishVersion)
	p.log.InfoContext(trace.ContextWithSpanContext(ctx, rec.rootContext()), "rollback", "app", app.Namespace+"/"+app.Name, "release", ref.Release, "to", target.Revision)
	return nil
}
