// Package v1alpha1 holds core.oam.dev/v1alpha1 Policy and Workflow, as KubeVela
// defines them: a Policy's type and properties and a Workflow's mode and steps
// sit at the top level of the object, not under spec.
//
// +kubebuilder:object:generate=true
// +groupName=core.oam.dev
package v1alpha1
