package planner

import (
	"encoding/json"
	"reflect"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
)

func TestWithRequests(t *testing.T) {
	resume := &v1beta1.ResumeRequest{ID: "r1", Step: "deploy-prod", Decision: "approve", User: "alice"}
	op := &v1beta1.WorkflowOperation{ID: "o1", Type: v1beta1.OperationSuspend, User: "bob"}
	hubWith := func(r *v1beta1.ResumeRequest, o *v1beta1.WorkflowOperation) v1beta1.AppStatus {
		return v1beta1.AppStatus{Workflow: &v1beta1.WorkflowStatus{Resume: r, Operation: o}}
	}
	tests := []struct {
		name       string
		computed   *v1beta1.WorkflowStatus
		hub        v1beta1.AppStatus
		wantResume string
		wantOp     string
	}{
		{"no workflow yet: nothing to keep", nil, hubWith(resume, op), "", ""},
		{"a pending operation written after the read is kept", &v1beta1.WorkflowStatus{}, hubWith(nil, op), "", "o1"},
		{"an operation carried out is removed", &v1beta1.WorkflowStatus{LastOperation: &v1beta1.OperationResult{ID: "o1"}}, hubWith(nil, op), "", ""},
		{"an older operation carried out does not hide a new one", &v1beta1.WorkflowStatus{LastOperation: &v1beta1.OperationResult{ID: "o0"}}, hubWith(nil, op), "", "o1"},
		{"the planner writes no operation of its own", &v1beta1.WorkflowStatus{Operation: &v1beta1.WorkflowOperation{ID: "mine"}}, hubWith(nil, nil), "", ""},
		{"a resume request the step still waits for is the hub's", &v1beta1.WorkflowStatus{Resume: &v1beta1.ResumeRequest{ID: "stale"}}, hubWith(resume, nil), "r1", ""},
		{"a resume request gone from the hub stays gone", &v1beta1.WorkflowStatus{Resume: &v1beta1.ResumeRequest{ID: "stale"}}, hubWith(nil, nil), "", ""},
		{"a resume request whose step moved on is removed", &v1beta1.WorkflowStatus{}, hubWith(resume, nil), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := v1beta1.AppStatus{Phase: v1beta1.PhaseRunningWorkflow, Workflow: tt.computed}
			var before []byte
			if tt.computed != nil {
				before, _ = json.Marshal(tt.computed)
			}
			got := withRequests(st, tt.hub)
			if tt.computed == nil {
				if got.Workflow != nil {
					t.Fatalf("workflow status %+v from nothing", got.Workflow)
				}
				return
			}
			if after, _ := json.Marshal(tt.computed); string(after) != string(before) {
				t.Errorf("withRequests changed its input: %s became %s", before, after)
			}
			gotResume, gotOp := "", ""
			if r := got.Workflow.Resume; r != nil {
				gotResume = r.ID
			}
			if o := got.Workflow.Operation; o != nil {
				gotOp = o.ID
			}
			if gotResume != tt.wantResume || gotOp != tt.wantOp {
				t.Errorf("resume %q, operation %q; want %q, %q", gotResume, gotOp, tt.wantResume, tt.wantOp)
			}
		})
	}
}

// What the hub holds is written back byte for byte: a round trip through
// the Go type would turn this time into another string and drop the empty
// group list, which the admission policy would read as a new claim.
func TestRequestsAsWrittenKeepTheHubsBytes(t *testing.T) {
	hubResume := map[string]any{"id": "r1", "step": "deploy-prod", "decision": "approve", "user": "alice", "groups": []any{}, "time": "2026-01-01T10:00:00.5+02:00"}
	hubOp := map[string]any{"id": "o1", "type": "suspend", "user": "bob", "time": "2026-01-01T10:00:00Z"}
	hub := map[string]any{"workflow": map[string]any{"resume": hubResume, "operation": hubOp, "status": "suspending"}}

	st := v1beta1.AppStatus{Workflow: &v1beta1.WorkflowStatus{
		Phase:     "suspending",
		Resume:    &v1beta1.ResumeRequest{ID: "r1", Step: "deploy-prod", Decision: "approve", User: "alice", Time: metav1.NewTime(time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC))},
		Operation: &v1beta1.WorkflowOperation{ID: "o1", Type: "suspend", User: "bob"},
	}}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		t.Fatal(err)
	}
	if err := requestsAsWritten(obj, hub); err != nil {
		t.Fatal(err)
	}
	wf := obj["workflow"].(map[string]any)
	if !reflect.DeepEqual(wf["resume"], hubResume) || !reflect.DeepEqual(wf["operation"], hubOp) {
		t.Errorf("requests written as\n%v\n%v\nwant the hub's\n%v\n%v", wf["resume"], wf["operation"], hubResume, hubOp)
	}
	// Kept requests are copies: writing the status cannot change the hub's read.
	wf["resume"].(map[string]any)["user"] = "mallory"
	if hubResume["user"] != "alice" {
		t.Error("the written request shares memory with the hub's")
	}

	// A request the hub no longer holds is not written.
	obj, _ = runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err := requestsAsWritten(obj, map[string]any{"workflow": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range requestFields {
		if _, found := obj["workflow"].(map[string]any)[f]; found {
			t.Errorf("%s written though the hub holds none", f)
		}
	}
	// Nothing kept, nothing added.
	empty, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&v1beta1.AppStatus{Workflow: &v1beta1.WorkflowStatus{}})
	if err := requestsAsWritten(empty, hub); err != nil {
		t.Fatal(err)
	}
	for _, f := range requestFields {
		if _, found := empty["workflow"].(map[string]any)[f]; found {
			t.Errorf("%s added from the hub though the status keeps none", f)
		}
	}
}

func TestKeyLocksSerialiseAndForget(t *testing.T) {
	var locks keyLocks
	var mu sync.Mutex
	inside, most := 0, 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			unlock := locks.lock("demo/demo")
			mu.Lock()
			inside++
			most = max(most, inside)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		})
	}
	wg.Wait()
	if most != 1 {
		t.Errorf("%d holders of one key at once", most)
	}
	other := locks.lock("a/b")
	if n := locks.held(); n != 1 {
		t.Errorf("%d keys held, want 1", n)
	}
	other()
	if n := locks.held(); n != 0 {
		t.Errorf("%d keys kept after every holder left", n)
	}
}
