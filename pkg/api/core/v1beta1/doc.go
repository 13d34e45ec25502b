// Package v1beta1 holds core.oam.dev/v1beta1 Application, as KubeVela defines
// it, with the status Flotilla's planner writes.
//
// +kubebuilder:object:generate=true
// +groupName=core.oam.dev
package v1beta1
