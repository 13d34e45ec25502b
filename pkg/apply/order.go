package apply

import (
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// kindRank orders objects so that what others depend on exists first:
// namespaces, CRDs, identities and RBAC, configuration, services, then
// workloads, then everything else. Lower applies first; unknown kinds rank
// after workloads.
var kindRank = map[string]int{
	"Namespace":                0,
	"CustomResourceDefinition": 1,
	"ServiceAccount":           2,
	"ClusterRole":              3,
	"ClusterRoleBinding":       3,
	"Role":                     3,
	"RoleBinding":              3,
	"ConfigMap":                4,
	"Secret":                   4,
	"PersistentVolumeClaim":    5,
	"Service":                  6,
	"Deployment":               7,
	"StatefulSet":              7,
	"DaemonSet":                7,
	"ReplicaSet":               7,
	"Job":                      7,
	"CronJob":                  7,
	"Ingress":                  8,
	"HorizontalPodAutoscaler":  8,
	"PodDisruptionBudget":      8,
}

const rankOther = 9

func rank(kind string) int {
	if r, ok := kindRank[kind]; ok {
		return r
	}
	return rankOther
}

// Sort orders objects for applying (stable: equal ranks keep their order).
// Deleting goes in the reverse order (deletionOrder).
func Sort(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool { return rank(objs[i].GetKind()) < rank(objs[j].GetKind()) })
}

// deletionOrder is refs in the order to delete them: the reverse of Sort's
// ranks (workloads before what they use, namespaces last), equal ranks in
// their order. refs itself is left alone.
func deletionOrder(refs []Ref) []Ref {
	out := slices.Clone(refs)
	slices.SortStableFunc(out, func(x, y Ref) int { return rank(y.Kind) - rank(x.Kind) })
	return out
}
