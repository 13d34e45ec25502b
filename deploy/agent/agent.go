// Package agent holds what a managed cluster needs for Flotilla's
// cluster-agent to run there least-privileged: its ServiceAccount and RBAC
// (rbac.yaml), and an example of the per-namespace executor through which it
// writes applications' objects (executor-example.yaml).
package agent

import (
	_ "embed"
)

// Executor is the ServiceAccount name rbac.yaml lets the agent act as.
const Executor = "flotilla-executor"

// ServiceAccount is the agent's own identity, as rbac.yaml names it.
const ServiceAccount = "system:serviceaccount:flotilla-system:flotilla-agent"

// RBAC is rbac.yaml: the agent's namespace, ServiceAccount and rights.
//
//go:embed rbac.yaml
var RBAC []byte

// ExecutorExample is executor-example.yaml.
//
//go:embed executor-example.yaml
var ExecutorExample []byte
