package workflow

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// FuzzParse: a user's step properties never panic the planner, and an
// accepted workflow runs to a decision without panicking either.
func FuzzParse(f *testing.F) {
	f.Add("deploy", `{"policies":["p"],"auto":false}`, "")
	f.Add("suspend", `{"duration":"1s","message":"m"}`, "1m")
	f.Add("suspend", `{"duration":5}`, "")
	f.Add("deploy", `{"policies":"p"}`, "x")
	f.Fuzz(func(t *testing.T, typ, props, timeout string) {
		step := v1alpha1.WorkflowStep{WorkflowStepBase: v1alpha1.WorkflowStepBase{Name: "s", Type: typ, Timeout: timeout, Properties: &runtime.RawExtension{Raw: []byte(props)}}}
		specs, err := Parse(nil, []v1alpha1.WorkflowStep{step})
		if err != nil {
			se, ok := problem.As(err)
			if !ok || se.Reason == "" || se.Message == "" {
				t.Fatalf("error without reason and message: %v", err)
			}
			return
		}
		r := NewRun(ref(), specs, t0)
		r.Apply(t0, Tick{})
		r.Apply(t0.Add(time.Hour), Decision{Step: "s", Approve: true})
		r.Apply(t0.Add(2*time.Hour), Tick{})
	})
}
