package apply

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Health assesses an object with kstatus (any kind: built-in workloads by
// their rules, others by their Ready/Reconciling/Stalled conditions and
// observedGeneration) and, for workloads, adds the replica summary.
func Health(ref Ref, obj *unstructured.Unstructured) events.ObjectStatus {
	st := events.ObjectStatus{Group: ref.Group, Version: ref.Version, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
	if obj == nil {
		st.Health, st.Message = events.HealthNotFound, "not found in the cluster"
		return st
	}
	st.Generation = obj.GetGeneration()
	res, err := status.Compute(obj)
	if err != nil {
		st.Health, st.Message = events.HealthUnknown, err.Error()
		return st
	}
	st.Health, st.Message = events.Health(res.Status.String()), res.Message
	st.Replicas = replicas(obj)
	return st
}

// replicas reads the summary kubectl prints for workloads.
func replicas(obj *unstructured.Unstructured) *events.Replicas {
	switch obj.GetKind() {
	case "Deployment", "StatefulSet", "ReplicaSet":
	default:
		return nil
	}
	get := func(path ...string) int32 {
		v, _, _ := unstructured.NestedInt64(obj.Object, path...)
		return int32(v)
	}
	desired := int32(1)
	if v, found, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas"); found {
		desired = int32(v)
	}
	return &events.Replicas{
		Desired:   desired,
		Ready:     get("status", "readyReplicas"),
		Updated:   get("status", "updatedReplicas"),
		Available: get("status", "availableReplicas"),
	}
}
