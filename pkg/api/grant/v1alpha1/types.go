package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is grant.flotilla.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "grant.flotilla.dev", Version: "v1alpha1"}

// ScopeGrantResource is the resource ScopeGrants are served as.
var ScopeGrantResource = GroupVersion.WithResource("scopegrants")

// Any, in a list of a grant, matches every name.
const Any = "*"

// ScopeGrant lets the Applications of the hub namespaces it names deploy
// into more than their own namespace of each managed cluster. It is
// cluster-scoped, so only a hub admin (whoever may write cluster-scoped
// objects) grants one; grants add up.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=sg
// +kubebuilder:printcolumn:name="NAMESPACES",type=string,JSONPath=`.spec.namespaces`
// +kubebuilder:printcolumn:name="TARGET NAMESPACES",type=string,JSONPath=`.spec.targetNamespaces`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type ScopeGrant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ScopeGrantSpec `json:"spec"`
}

// ScopeGrantList is a list of ScopeGrants.
//
// +kubebuilder:object:root=true
type ScopeGrantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ScopeGrant `json:"items"`
}

// ScopeGrantSpec says who is granted what.
type ScopeGrantSpec struct {
	// Namespaces are the hub namespaces whose Applications the grant is for
	// ("*": every one).
	// +kubebuilder:validation:MinItems=1
	Namespaces []string `json:"namespaces"`
	// TargetNamespaces are the managed clusters' namespaces those
	// Applications may deploy into besides their own ("*": any). The
	// agent's own namespace is never granted.
	// +optional
	TargetNamespaces []string `json:"targetNamespaces,omitempty"`
	// ClusterScopedKinds are the cluster-scoped kinds those Applications may
	// deploy (a Namespace, a CustomResourceDefinition, a ClusterRole, ...).
	// +optional
	ClusterScopedKinds []GroupKind `json:"clusterScopedKinds,omitempty"`
}

// GroupKind names a kind; Kind "*" is every kind of the group.
type GroupKind struct {
	// Group is the API group, "" for the core group.
	// +optional
	Group string `json:"group"`
	Kind  string `json:"kind"`
}
