package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
)

// GroupVersion is core.oam.dev/v1beta1.
var GroupVersion = schema.GroupVersion{Group: "core.oam.dev", Version: "v1beta1"}

// ApplicationResource is the resource Applications are served as.
var ApplicationResource = GroupVersion.WithResource("applications")

// AnnotationPublishVersion is the release switch: when it is set, a new
// release starts only when its value changes.
const AnnotationPublishVersion = "app.oam.dev/publishVersion"

// AnnotationDecisionID marks the Kubernetes Event in which the gate records
// (or refuses) a decision, so whoever asked can find the answer.
const AnnotationDecisionID = "flotilla.dev/decision-id"

// Application is what a user rolls out: components, the policies that place
// them, and the workflow that orders the rollout.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=app,categories=oam
// +kubebuilder:printcolumn:name="COMPONENT",type=string,JSONPath=`.spec.components[*].name`
// +kubebuilder:printcolumn:name="TYPE",type=string,JSONPath=`.spec.components[*].type`
// +kubebuilder:printcolumn:name="PHASE",type=string,JSONPath=`.status.status`
// +kubebuilder:printcolumn:name="HEALTHY",type=boolean,JSONPath=`.status.services[*].healthy`
// +kubebuilder:printcolumn:name="STATUS",type=string,JSONPath=`.status.services[*].message`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type Application struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ApplicationSpec `json:"spec,omitempty"`
	Status AppStatus       `json:"status,omitempty"`
}

// ApplicationList is a list of Applications.
//
// +kubebuilder:object:root=true
type ApplicationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Application `json:"items"`
}

// ApplicationSpec is what to deploy, where, and in which order.
type ApplicationSpec struct {
	// Components to deploy.
	// +kubebuilder:validation:MinItems=1
	Components []ApplicationComponent `json:"components"`
	// Policies declared inline; a workflow step may also name Policy objects
	// in the Application's namespace.
	// +optional
	Policies []AppPolicy `json:"policies,omitempty"`
	// Workflow orders the rollout: ref names a Workflow object, or steps are inline.
	// +optional
	Workflow *AppWorkflow `json:"workflow,omitempty"`
}

// ApplicationComponent is one part of the application.
type ApplicationComponent struct {
	// Name of the component, unique in the application.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Type of the component; Flotilla supports ref-objects.
	// +kubebuilder:validation:MinLength=1
	Type string `json:"type"`
	// Properties of the component; for ref-objects, objects[] references
	// objects in the Application's namespace by apiVersion+kind+name or by
	// resource(+group)+name.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Properties *runtime.RawExtension `json:"properties,omitempty"`
	// DependsOn names components deployed before this one.
	// +optional
	DependsOn []string `json:"dependsOn,omitempty"`
	// Traits attach operational behaviour (kept for KubeVela compatibility).
	// +optional
	Traits []ApplicationTrait `json:"traits,omitempty"`
}

// ApplicationTrait is a trait attached to a component.
type ApplicationTrait struct {
	// +kubebuilder:validation:MinLength=1
	Type string `json:"type"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Properties *runtime.RawExtension `json:"properties,omitempty"`
}

// AppPolicy is a policy declared inside the Application.
type AppPolicy struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	Type string `json:"type"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Properties *runtime.RawExtension `json:"properties,omitempty"`
}

// AppWorkflow is the Application's rollout order: a reference to a Workflow
// object, or inline steps.
type AppWorkflow struct {
	// Ref names a Workflow in the Application's namespace.
	// +optional
	Ref string `json:"ref,omitempty"`
	// +optional
	Mode *v1alpha1.WorkflowExecuteMode `json:"mode,omitempty"`
	// +optional
	Steps []v1alpha1.WorkflowStep `json:"steps,omitempty"`
}

// ApplicationPhase is the Application's phase, printed as PHASE.
type ApplicationPhase string

// Application phases, named as KubeVela names them.
const (
	PhaseStarting           ApplicationPhase = "starting"
	PhaseRunningWorkflow    ApplicationPhase = "runningWorkflow"
	PhaseWorkflowSuspending ApplicationPhase = "workflowSuspending"
	PhaseWorkflowTerminated ApplicationPhase = "workflowTerminated"
	PhaseWorkflowFailed     ApplicationPhase = "workflowFailed"
	PhaseRunning            ApplicationPhase = "running"
	PhaseUnhealthy          ApplicationPhase = "unhealthy"
	PhaseDeleting           ApplicationPhase = "deleting"
)

// AppStatus is what the planner reports.
type AppStatus struct {
	// Conditions say why the Application is in its phase (Ready, ...).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Phase of the Application.
	// +optional
	Phase ApplicationPhase `json:"status,omitempty"`
	// Services is the health of each component in each cluster it runs in.
	// +optional
	Services []ApplicationComponentStatus `json:"services,omitempty"`
	// Workflow is the state of the current release's workflow.
	// +optional
	Workflow *WorkflowStatus `json:"workflow,omitempty"`
	// LatestRevision is the current release.
	// +optional
	LatestRevision *Revision `json:"latestRevision,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ApplicationComponentStatus is one component's health in one cluster.
type ApplicationComponentStatus struct {
	Name string `json:"name"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	Cluster string `json:"cluster,omitempty"`
	Healthy bool   `json:"healthy"`
	// Message says what is not healthy; empty when all is well.
	// +optional
	Message string `json:"message,omitempty"`
}

// Revision identifies a release.
type Revision struct {
	// Name is <app>-v<revision>.
	Name     string `json:"name"`
	Revision int64  `json:"revision"`
	// PublishVersion is the app.oam.dev/publishVersion the release was cut for.
	// +optional
	PublishVersion string `json:"publishVersion,omitempty"`
	// Digest is the sha256 of the release's snapshot.
	// +optional
	Digest string `json:"digest,omitempty"`
}

// WorkflowStatus is the state of a release's workflow.
type WorkflowStatus struct {
	// AppRevision is the release the workflow runs.
	// +optional
	AppRevision string `json:"appRevision,omitempty"`
	// +optional
	Mode string `json:"mode,omitempty"`
	// +optional
	Phase string `json:"status,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// Suspend is true while a step waits for a person or a duration.
	// +optional
	Suspend bool `json:"suspend"`
	// +optional
	Terminated bool `json:"terminated"`
	// +optional
	Finished bool `json:"finished"`
	// +optional
	Steps []StepStatus `json:"steps,omitempty"`
	// Resume is a request to approve the waiting step, written by
	// `kubectl flotilla workflow resume` (which needs RBAC to update this
	// status) and honoured by the gate.
	// +optional
	Resume *ResumeRequest `json:"resume,omitempty"`
	// Operation is a request to suspend, resume, terminate, restart or roll
	// back the workflow, written by `kubectl flotilla workflow ...` (which
	// needs RBAC to update this status) and carried out by the planner.
	// +optional
	Operation *WorkflowOperation `json:"operation,omitempty"`
	// LastOperation is the outcome of the last operation.
	// +optional
	LastOperation *OperationResult `json:"lastOperation,omitempty"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	EndTime *metav1.Time `json:"endTime,omitempty"`
}

// ResumeRequest asks the gate to record a decision on the waiting step.
type ResumeRequest struct {
	// ID makes the request unique; the same ID counts once.
	ID   string `json:"id"`
	Step string `json:"step"`
	// Release is the release (status.workflow.appRevision) the requester saw
	// waiting: the decision counts for it only.
	// +optional
	Release string `json:"release,omitempty"`
	// Decision is approve (resume) or reject (terminate).
	Decision string `json:"decision"`
	// User and Groups are the requester as the hub API server knows them
	// (SelfSubjectReview).
	User   string      `json:"user"`
	Groups []string    `json:"groups,omitempty"`
	Reason string      `json:"reason,omitempty"`
	Time   metav1.Time `json:"time"`
}

// Workflow operations.
const (
	OperationSuspend   = "suspend"
	OperationResume    = "resume"
	OperationTerminate = "terminate"
	OperationRestart   = "restart"
	OperationRollback  = "rollback"
)

// WorkflowOperation asks the planner to operate the workflow.
type WorkflowOperation struct {
	// ID makes the request unique; the same ID is carried out once.
	ID string `json:"id"`
	// Type is suspend, resume, terminate, restart or rollback.
	// +kubebuilder:validation:Enum=suspend;resume;terminate;restart;rollback
	Type   string      `json:"type"`
	User   string      `json:"user"`
	Reason string      `json:"reason,omitempty"`
	Time   metav1.Time `json:"time"`
}

// OperationResult says what became of an operation.
type OperationResult struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	User      string      `json:"user"`
	Succeeded bool        `json:"succeeded"`
	Message   string      `json:"message,omitempty"`
	Time      metav1.Time `json:"time"`
}

// StepPhase is a step's phase.
type StepPhase string

// Step phases, named as KubeVela names them.
const (
	StepPending    StepPhase = "pending"
	StepRunning    StepPhase = "running"
	StepSuspending StepPhase = "suspending"
	StepSucceeded  StepPhase = "succeeded"
	StepFailed     StepPhase = "failed"
	StepSkipped    StepPhase = "skipped"
)

// StepStatus is one step's state.
type StepStatus struct {
	// +optional
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
	// +optional
	Type  string    `json:"type,omitempty"`
	Phase StepPhase `json:"phase,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	FirstExecuteTime *metav1.Time `json:"firstExecuteTime,omitempty"`
	// +optional
	LastExecuteTime *metav1.Time `json:"lastExecuteTime,omitempty"`
	// Approvals recorded for a manual step: who, when, and how.
	// +optional
	Approvals []Approval `json:"approvals,omitempty"`
}

// Approval is one recorded decision on a manual step.
type Approval struct {
	Approver string `json:"approver"`
	// Decision is approve or reject.
	Decision string `json:"decision"`
	// Via is nats, http or cli.
	Via string `json:"via"`
	// +optional
	Reason string      `json:"reason,omitempty"`
	Time   metav1.Time `json:"time"`
}
