package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is core.oam.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "core.oam.dev", Version: "v1alpha1"}

// Resources served in this group version.
var (
	PolicyResource   = GroupVersion.WithResource("policies")
	WorkflowResource = GroupVersion.WithResource("workflows")
)

// Policy says where or how an Application's components are deployed; its
// meaning depends on Type (`topology`: to which clusters).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=po,categories=oam
// +kubebuilder:printcolumn:name="TYPE",type=string,JSONPath=`.type`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type Policy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Type of the policy, e.g. topology.
	// +kubebuilder:validation:MinLength=1
	Type string `json:"type"`
	// Properties of the policy; their schema depends on Type.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Properties *runtime.RawExtension `json:"properties,omitempty"`
}

// PolicyList is a list of Policies.
//
// +kubebuilder:object:root=true
type PolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Policy `json:"items"`
}

// Workflow is a reusable list of steps an Application runs, referenced by
// spec.workflow.ref.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=wf,categories=oam
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type Workflow struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Mode of running steps and sub-steps (StepByStep or DAG).
	// +optional
	Mode *WorkflowExecuteMode `json:"mode,omitempty"`
	// Steps run in order (StepByStep).
	// +optional
	Steps []WorkflowStep `json:"steps,omitempty"`
}

// WorkflowList is a list of Workflows.
//
// +kubebuilder:object:root=true
type WorkflowList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workflow `json:"items"`
}

// WorkflowMode is how steps run.
// +kubebuilder:validation:Enum=StepByStep;DAG
type WorkflowMode string

// Workflow modes.
const (
	WorkflowModeStep WorkflowMode = "StepByStep"
	WorkflowModeDAG  WorkflowMode = "DAG"
)

// WorkflowExecuteMode is the mode of steps and of sub-steps.
type WorkflowExecuteMode struct {
	// +optional
	Steps WorkflowMode `json:"steps,omitempty"`
	// +optional
	SubSteps WorkflowMode `json:"subSteps,omitempty"`
}

// WorkflowStep is one step, possibly a group of sub-steps.
type WorkflowStep struct {
	WorkflowStepBase `json:",inline"`
	// SubSteps of a step-group.
	// +optional
	SubSteps []WorkflowStepBase `json:"subSteps,omitempty"`
}

// WorkflowStepBase is what every step has.
type WorkflowStepBase struct {
	// Name of the step, unique in the workflow.
	// +optional
	Name string `json:"name,omitempty"`
	// Type of the step: deploy, suspend, ...
	// +kubebuilder:validation:MinLength=1
	Type string `json:"type"`
	// Meta is the step's display information.
	// +optional
	Meta *WorkflowStepMeta `json:"meta,omitempty"`
	// Properties of the step; their schema depends on Type. For deploy:
	// policies, auto; for suspend: duration, message; for any manual step:
	// approvers, minApprovals.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Properties *runtime.RawExtension `json:"properties,omitempty"`
	// DependsOn names steps this one waits for (DAG mode).
	// +optional
	DependsOn []string `json:"dependsOn,omitempty"`
	// If is a condition for running the step.
	// +optional
	If string `json:"if,omitempty"`
	// Timeout fails the step when it runs longer, e.g. "10m".
	// +optional
	Timeout string `json:"timeout,omitempty"`
}

// WorkflowStepMeta is a step's display information.
type WorkflowStepMeta struct {
	// +optional
	Alias string `json:"alias,omitempty"`
}
