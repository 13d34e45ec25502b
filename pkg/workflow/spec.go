// Package workflow owns the workflow engine: parsing a Workflow's steps into
// what the engine runs, and the state machine of one release's run. It is
// pure: no I/O, no clocks (time is an input), so every transition is
// table-tested. The planner drives it.
package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// Step types the engine runs.
const (
	StepTypeDeploy  = "deploy"
	StepTypeSuspend = "suspend"
)

// StepSpec is one step as the engine runs it.
type StepSpec struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Properties as written, passed on in step events (the gate reads
	// approvers and minApprovals from them).
	Properties json.RawMessage `json:"properties,omitempty"`
	// Timeout fails the step when it has not finished this long after it started.
	Timeout time.Duration `json:"timeout,omitempty"`

	// deploy: Policies name topology (and later override) policies; Auto
	// false makes a person approve before the step deploys.
	Policies []string `json:"policies,omitempty"`
	Auto     bool     `json:"auto"`
	// suspend: Duration resumes by itself; zero waits for approval.
	Duration time.Duration `json:"duration,omitempty"`
	Message  string        `json:"message,omitempty"`
}

// Manual reports whether the step waits for a person.
func (s StepSpec) Manual() bool {
	switch s.Type {
	case StepTypeDeploy:
		return !s.Auto
	case StepTypeSuspend:
		return s.Duration == 0
	}
	return false
}

// Reasons of the problems Parse reports (a workflow a user wrote wrong).
const (
	ReasonUnknownStepType    = "UnknownStepType"
	ReasonDuplicateStep      = "DuplicateStepName"
	ReasonInvalidStep        = "InvalidStepProperties"
	ReasonNoSteps            = "NoWorkflowSteps"
	ReasonUnsupportedFeature = "UnsupportedWorkflowFeature"
)

type deployProps struct {
	Policies []string `json:"policies"`
	Auto     *bool    `json:"auto"`
	approvalProps
}

type suspendProps struct {
	Duration string `json:"duration"`
	Message  string `json:"message"`
	approvalProps
}

// approvalProps say who decides a manual step (read by the gate).
type approvalProps struct {
	Approvers    []string `json:"approvers"`
	MinApprovals *int     `json:"minApprovals"`
}

func (a approvalProps) check(step string) error {
	if a.MinApprovals != nil && *a.MinApprovals < 1 {
		return problem.New(ReasonInvalidStep, "step %q: minApprovals %d must be at least 1", step, *a.MinApprovals)
	}
	for _, ap := range a.Approvers {
		if ap == "" {
			return problem.New(ReasonInvalidStep, "step %q: approvers has an empty name", step)
		}
	}
	return nil
}

// Parse turns a workflow's steps into what the engine runs, or says exactly
// which step is wrong and why.
func Parse(mode *v1alpha1.WorkflowExecuteMode, steps []v1alpha1.WorkflowStep) ([]StepSpec, error) {
	if mode != nil && mode.Steps != "" && mode.Steps != v1alpha1.WorkflowModeStep {
		return nil, problem.New(ReasonUnsupportedFeature, "workflow mode %q is not supported yet: use StepByStep", mode.Steps)
	}
	if len(steps) == 0 {
		return nil, problem.New(ReasonNoSteps, "the workflow has no steps")
	}
	seen := map[string]bool{}
	out := make([]StepSpec, 0, len(steps))
	for i, st := range steps {
		name := st.Name
		if name == "" {
			return nil, problem.New(ReasonInvalidStep, "step %d (type %q) has no name", i+1, st.Type)
		}
		if seen[name] {
			return nil, problem.New(ReasonDuplicateStep, "step name %q is used twice", name)
		}
		seen[name] = true
		if len(st.SubSteps) > 0 || st.If != "" || len(st.DependsOn) > 0 {
			return nil, problem.New(ReasonUnsupportedFeature, "step %q: sub-steps, if and dependsOn are not supported yet", name)
		}
		s := StepSpec{Name: name, Type: st.Type}
		if st.Properties != nil {
			s.Properties = json.RawMessage(st.Properties.Raw)
		}
		if st.Timeout != "" {
			d, err := time.ParseDuration(st.Timeout)
			if err != nil || d <= 0 {
				return nil, problem.New(ReasonInvalidStep, "step %q: timeout %q is not a positive duration like 10m", name, st.Timeout)
			}
			s.Timeout = d
		}
		switch st.Type {
		case StepTypeDeploy:
			var p deployProps
			if err := decodeProps(s.Properties, &p); err != nil {
				return nil, problem.New(ReasonInvalidStep, "step %q: properties: %v", name, err)
			}
			if len(p.Policies) == 0 {
				return nil, problem.New(ReasonInvalidStep, "step %q: deploy needs properties.policies naming at least one topology policy", name)
			}
			if err := p.check(name); err != nil {
				return nil, err
			}
			s.Policies, s.Auto = p.Policies, p.Auto == nil || *p.Auto
		case StepTypeSuspend:
			var p suspendProps
			if err := decodeProps(s.Properties, &p); err != nil {
				return nil, problem.New(ReasonInvalidStep, "step %q: properties: %v", name, err)
			}
			if err := p.check(name); err != nil {
				return nil, err
			}
			if p.Duration != "" {
				d, err := time.ParseDuration(p.Duration)
				if err != nil || d <= 0 {
					return nil, problem.New(ReasonInvalidStep, "step %q: duration %q is not a positive duration like 30s", name, p.Duration)
				}
				s.Duration = d
			}
			s.Message = p.Message
		default:
			return nil, problem.New(ReasonUnknownStepType, "step %q has unknown type %q (supported: deploy, suspend)", name, st.Type)
		}
		out = append(out, s)
	}
	return out, nil
}

func decodeProps(raw json.RawMessage, into any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, into); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s must be %s, not %s", te.Field, te.Type, te.Value)
		}
		return err
	}
	return nil
}
