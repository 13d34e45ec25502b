package v1beta2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is cluster.open-cluster-management.io/v1beta2.
var GroupVersion = schema.GroupVersion{Group: "cluster.open-cluster-management.io", Version: "v1beta2"}

// Resources ManagedClusterSets and ManagedClusterSetBindings are served as.
var (
	ManagedClusterSetResource        = GroupVersion.WithResource("managedclustersets")
	ManagedClusterSetBindingResource = GroupVersion.WithResource("managedclustersetbindings")
)

// LabelClusterSet puts a ManagedCluster in the set of that name (a set of
// selector type ExclusiveClusterSetLabel).
const LabelClusterSet = "cluster.open-cluster-management.io/clusterset"

// Selector types of a ManagedClusterSet.
const (
	ExclusiveClusterSetLabel = "ExclusiveClusterSetLabel"
	LabelSelector            = "LabelSelector"
)

// ManagedClusterSet groups managed clusters; only the hub namespaces bound
// to a set (ManagedClusterSetBinding) may deploy to its clusters.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=mclset;mclsets
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type ManagedClusterSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ManagedClusterSetSpec `json:"spec,omitempty"`
}

// ManagedClusterSetList is a list of ManagedClusterSets.
//
// +kubebuilder:object:root=true
type ManagedClusterSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ManagedClusterSet `json:"items"`
}

// ManagedClusterSetSpec says which clusters are in the set.
type ManagedClusterSetSpec struct {
	// +optional
	ClusterSelector ManagedClusterSelector `json:"clusterSelector,omitempty"`
}

// ManagedClusterSelector selects the set's clusters: by the set label
// (ExclusiveClusterSetLabel, the default) or by a label selector.
type ManagedClusterSelector struct {
	// +kubebuilder:validation:Enum=ExclusiveClusterSetLabel;LabelSelector
	// +kubebuilder:default=ExclusiveClusterSetLabel
	// +optional
	SelectorType string `json:"selectorType,omitempty"`
	// +optional
	LabelSelector *metav1.LabelSelector `json:"labelSelector,omitempty"`
}

// ManagedClusterSetBinding, in a hub namespace, lets that namespace's
// Applications deploy to the clusters of the set it names (its own name
// must be the set's, as Open Cluster Management requires).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=mclsetbinding;mclsetbindings
// +kubebuilder:printcolumn:name="CLUSTERSET",type=string,JSONPath=`.spec.clusterSet`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type ManagedClusterSetBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ManagedClusterSetBindingSpec `json:"spec"`
}

// ManagedClusterSetBindingList is a list of ManagedClusterSetBindings.
//
// +kubebuilder:object:root=true
type ManagedClusterSetBindingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ManagedClusterSetBinding `json:"items"`
}

// ManagedClusterSetBindingSpec names the set bound.
type ManagedClusterSetBindingSpec struct {
	ClusterSet string `json:"clusterSet"`
}
