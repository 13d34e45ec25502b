// Package v1alpha1 holds grant.flotilla.dev/v1alpha1 ScopeGrant: what a hub
// admin lets the Applications of some hub namespaces deploy beyond their own
// namespace (other namespaces of the managed clusters, objects of
// cluster-scoped kinds). Without a grant an Application deploys only into the
// managed clusters' namespace of its own name.
//
// +kubebuilder:object:generate=true
// +groupName=grant.flotilla.dev
package v1alpha1
