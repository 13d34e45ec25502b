package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is cluster.open-cluster-management.io/v1.
var GroupVersion = schema.GroupVersion{Group: "cluster.open-cluster-management.io", Version: "v1"}

// ManagedClusterResource is the resource ManagedClusters are served as.
var ManagedClusterResource = GroupVersion.WithResource("managedclusters")

// Condition types of a ManagedCluster, as Open Cluster Management names them.
const (
	// ConditionJoined is True once the hub accepted the cluster and its agent is connected.
	ConditionJoined = "ManagedClusterJoined"
	// ConditionAvailable is True while heartbeats arrive, Unknown after missed ones.
	ConditionAvailable = "ManagedClusterConditionAvailable"
	// ConditionHubAccepted is True once an admin (or --auto-accept) accepted the cluster.
	ConditionHubAccepted = "HubAcceptedManagedCluster"
)

// ManagedCluster is a cluster whose agent asked to join the hub.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mcl;mcls
// +kubebuilder:printcolumn:name="HUB ACCEPTED",type=boolean,JSONPath=`.spec.hubAcceptsClient`
// +kubebuilder:printcolumn:name="MANAGED CLUSTER URLS",type=string,JSONPath=`.spec.managedClusterClientConfigs[*].url`
// +kubebuilder:printcolumn:name="JOINED",type=string,JSONPath=`.status.conditions[?(@.type=="ManagedClusterJoined")].status`
// +kubebuilder:printcolumn:name="AVAILABLE",type=string,JSONPath=`.status.conditions[?(@.type=="ManagedClusterConditionAvailable")].status`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type ManagedCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ManagedClusterSpec   `json:"spec,omitempty"`
	Status ManagedClusterStatus `json:"status,omitempty"`
}

// ManagedClusterList is a list of ManagedClusters.
//
// +kubebuilder:object:root=true
type ManagedClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ManagedCluster `json:"items"`
}

// ManagedClusterSpec is what the hub decided about the cluster.
type ManagedClusterSpec struct {
	// HubAcceptsClient is set by an admin (kubectl flotilla cluster accept) to
	// let the cluster's agent receive work. An agent that is not accepted
	// applies nothing.
	HubAcceptsClient bool `json:"hubAcceptsClient"`
	// ManagedClusterClientConfigs are the cluster's API addresses, when known.
	// Flotilla's hub never connects to them: agents pull their work.
	// +optional
	ManagedClusterClientConfigs []ClientConfig `json:"managedClusterClientConfigs,omitempty"`
	// LeaseDurationSeconds is the heartbeat interval the agent reports.
	// +optional
	LeaseDurationSeconds int32 `json:"leaseDurationSeconds,omitempty"`
}

// ClientConfig is one address of the cluster's API server.
type ClientConfig struct {
	// +optional
	URL string `json:"url,omitempty"`
	// +optional
	CABundle []byte `json:"caBundle,omitempty"`
}

// ManagedClusterStatus is what the dispatcher observed of the cluster's agent.
type ManagedClusterStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Version of the cluster's Kubernetes.
	// +optional
	Version ManagedClusterVersion `json:"version,omitempty"`
}

// ManagedClusterVersion is the cluster's Kubernetes version.
type ManagedClusterVersion struct {
	// +optional
	Kubernetes string `json:"kubernetes,omitempty"`
}
