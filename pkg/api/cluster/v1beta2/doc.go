// Package v1beta2 holds cluster.open-cluster-management.io/v1beta2
// ManagedClusterSet and ManagedClusterSetBinding, as Open Cluster Management
// defines them: a set groups clusters (those labelled
// cluster.open-cluster-management.io/clusterset=<set>, or those its label
// selector matches), and a binding in a hub namespace lets that namespace's
// Applications deploy to the set's clusters. A cluster in no set is open to
// every namespace.
//
// +kubebuilder:object:generate=true
// +groupName=cluster.open-cluster-management.io
package v1beta2
