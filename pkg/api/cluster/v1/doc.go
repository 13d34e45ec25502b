// Package v1 holds cluster.open-cluster-management.io/v1 ManagedCluster, the
// hub's record of a cluster whose agent joined, shaped as Open Cluster
// Management defines it.
//
// +kubebuilder:object:generate=true
// +groupName=cluster.open-cluster-management.io
package v1
