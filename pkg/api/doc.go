// Package api holds the Go types of Flotilla's hub API, one package per group
// version, shaped so the KubeVela and Open Cluster Management YAML users
// already have applies unchanged:
//
//   - core/v1beta1: Application (core.oam.dev)
//   - core/v1alpha1: Policy and Workflow (core.oam.dev), with type/properties
//     and mode/steps at the top level of the object, as KubeVela has them
//   - cluster/v1: ManagedCluster (cluster.open-cluster-management.io)
//
// The CRDs in deploy/crds are generated from these types (`make generate`).
package api
