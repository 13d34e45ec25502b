package planner

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
)

// The planner is the one writer of an Application's status, but users
// write two requests into it: a resume request (`kubectl flotilla workflow
// resume`, which the gate judges) and an operation request (suspend,
// terminate, restart, rollback, which the planner carries out). Each is its
// writer's claim, checked by the hub's admission policy against who wrote
// it: the planner never writes one of its own, it keeps the hub's as they
// are, byte for byte, or removes them.

// writeStatus writes st if it differs from what the hub has, retrying on
// conflict with a fresh read.
func (p *Planner) writeStatus(ctx context.Context, app *v1beta1.Application, st v1beta1.AppStatus) error {
	if equality.Semantic.DeepEqual(app.Status, st) {
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := p.appClient(app.Namespace).Get(ctx, app.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if u.GetUID() != app.UID {
			return nil
		}
		fresh := &v1beta1.Application{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, fresh); err != nil {
			return err
		}
		st := withRequests(st, fresh.Status)
		if equality.Semantic.DeepEqual(fresh.Status, st) {
			return nil
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			return err
		}
		hubStatus, _, _ := unstructured.NestedMap(u.Object, "status")
		if err := requestsAsWritten(obj, hubStatus); err != nil {
			return err
		}
		u.Object["status"] = obj
		_, err = p.appClient(app.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write status of Application %s/%s: %w", app.Namespace, app.Name, err)
	}
	return nil
}

func (p *Planner) appClient(ns string) dynamic.ResourceInterface {
	return p.dyn.Resource(v1beta1.ApplicationResource).Namespace(ns)
}

// withRequests is st, computed from an older read, with the users' requests
// the hub holds now: an operation request the planner has not carried out
// yet stays (it was written after the read: the write's own watch event
// brings it to the next pass); a resume request stays while st keeps one
// (its step still waits), as the hub has it. Pure.
func withRequests(st v1beta1.AppStatus, hub v1beta1.AppStatus) v1beta1.AppStatus {
	if st.Workflow == nil {
		return st
	}
	wf := *st.Workflow
	st.Workflow = &wf
	wf.Operation = nil
	if op := workflowOf(hub).Operation; op != nil && (wf.LastOperation == nil || wf.LastOperation.ID != op.ID) {
		wf.Operation = op.DeepCopy()
	}
	if wf.Resume != nil {
		wf.Resume = nil
		if r := workflowOf(hub).Resume; r != nil {
			wf.Resume = r.DeepCopy()
		}
	}
	return st
}

func workflowOf(st v1beta1.AppStatus) v1beta1.WorkflowStatus {
	if st.Workflow == nil {
		return v1beta1.WorkflowStatus{}
	}
	return *st.Workflow
}

// requestFields are the fields of status.workflow that users write.
var requestFields = []string{"resume", "operation"}

// requestsAsWritten makes the requests obj (a status about to be written)
// keeps exactly the hub's bytes (hub is the hub's status, as read): a
// round trip through the Go type would change times and empty lists, and
// the admission policy would refuse that as a new claim in its writer's
// name. A request the hub no longer has is removed. Pure.
func requestsAsWritten(obj, hub map[string]any) error {
	for _, field := range requestFields {
		if _, kept, _ := unstructured.NestedFieldNoCopy(obj, "workflow", field); !kept {
			continue
		}
		raw, found, _ := unstructured.NestedFieldNoCopy(hub, "workflow", field)
		if !found {
			unstructured.RemoveNestedField(obj, "workflow", field)
			continue
		}
		if err := unstructured.SetNestedField(obj, raw, "workflow", field); err != nil {
			return fmt.Errorf("keep status.workflow.%s as written: %w", field, err)
		}
	}
	return nil
}
