package workflow

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

func ws(name, typ, props string) v1alpha1.WorkflowStep {
	s := v1alpha1.WorkflowStep{WorkflowStepBase: v1alpha1.WorkflowStepBase{Name: name, Type: typ}}
	if props != "" {
		s.Properties = &runtime.RawExtension{Raw: []byte(props)}
	}
	return s
}

func TestParseSeedWorkflow(t *testing.T) {
	got, err := Parse(nil, []v1alpha1.WorkflowStep{
		ws("deploy-test", "deploy", `{"policies":["cluster-test"]}`),
		ws("deploy-prod", "deploy", `{"auto":false,"policies":["cluster-prod"]}`),
		ws("bake", "suspend", `{"duration":"30s","message":"bake"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Auto || got[0].Manual() || got[0].Policies[0] != "cluster-test" {
		t.Errorf("deploy-test = %+v", got[0])
	}
	if got[1].Auto || !got[1].Manual() {
		t.Errorf("deploy-prod = %+v", got[1])
	}
	if got[2].Duration != 30*time.Second || got[2].Manual() {
		t.Errorf("bake = %+v", got[2])
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name   string
		mode   *v1alpha1.WorkflowExecuteMode
		steps  []v1alpha1.WorkflowStep
		reason string
		msg    string
	}{
		{"no steps", nil, nil, ReasonNoSteps, "no steps"},
		{"unknown type", nil, []v1alpha1.WorkflowStep{ws("x", "notify-slack", "")}, ReasonUnknownStepType, `step "x" has unknown type "notify-slack"`},
		{"duplicate", nil, []v1alpha1.WorkflowStep{ws("a", "suspend", ""), ws("a", "suspend", "")}, ReasonDuplicateStep, `step name "a" is used twice`},
		{"no name", nil, []v1alpha1.WorkflowStep{ws("", "suspend", "")}, ReasonInvalidStep, "has no name"},
		{"deploy without policies", nil, []v1alpha1.WorkflowStep{ws("d", "deploy", `{}`)}, ReasonInvalidStep, "properties.policies"},
		{"auto not bool", nil, []v1alpha1.WorkflowStep{ws("d", "deploy", `{"auto":"no","policies":["p"]}`)}, ReasonInvalidStep, "auto must be bool"},
		{"bad duration", nil, []v1alpha1.WorkflowStep{ws("s", "suspend", `{"duration":"soon"}`)}, ReasonInvalidStep, `duration "soon"`},
		{"bad timeout", nil, []v1alpha1.WorkflowStep{func() v1alpha1.WorkflowStep { s := ws("s", "suspend", ""); s.Timeout = "-1s"; return s }()}, ReasonInvalidStep, `timeout "-1s"`},
		{"approvers not a list", nil, []v1alpha1.WorkflowStep{ws("d", "deploy", `{"auto":false,"policies":["p"],"approvers":"alice"}`)}, ReasonInvalidStep, "approvers must be []string"},
		{"minApprovals not a number", nil, []v1alpha1.WorkflowStep{ws("d", "deploy", `{"auto":false,"policies":["p"],"minApprovals":"2"}`)}, ReasonInvalidStep, "minApprovals must be int"},
		{"minApprovals zero", nil, []v1alpha1.WorkflowStep{ws("s", "suspend", `{"minApprovals":0}`)}, ReasonInvalidStep, "minApprovals 0 must be at least 1"},
		{"DAG", &v1alpha1.WorkflowExecuteMode{Steps: v1alpha1.WorkflowModeDAG}, []v1alpha1.WorkflowStep{ws("s", "suspend", "")}, ReasonUnsupportedFeature, "DAG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.mode, tt.steps)
			se, ok := problem.As(err)
			if !ok {
				t.Fatalf("Parse() = %v, want a problem", err)
			}
			if se.Reason != tt.reason || !strings.Contains(se.Message, tt.msg) {
				t.Errorf("Parse() = %s %q, want %s containing %q", se.Reason, se.Message, tt.reason, tt.msg)
			}
		})
	}
}
