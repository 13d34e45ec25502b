package release

import (
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flotilla-dev/flotilla/pkg/problem"
)

// ObjectRef is one entry of a ref-objects component's properties.objects:
// by apiVersion+kind+name (as the seed writes it) or by resource(+group)+name.
type ObjectRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Resource   string `json:"resource,omitempty"`
	Group      string `json:"group,omitempty"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
}

// GVK is the reference's group/version/kind, when given by apiVersion+kind.
func (r ObjectRef) GVK() (schema.GroupVersionKind, bool) {
	if r.Kind == "" {
		return schema.GroupVersionKind{}, false
	}
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind), true
}

// GroupResource is the reference's group and resource, when given so.
func (r ObjectRef) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.Group, Resource: r.Resource}
}

// String names the object the way kubectl does: Deployment demo, or deployments.apps demo.
func (r ObjectRef) String() string {
	if r.Kind != "" {
		return r.Kind + " " + r.Name
	}
	return r.GroupResource().String() + " " + r.Name
}

type refObjectsProps struct {
	Objects []ObjectRef `json:"objects"`
}

// ParseRefObjects reads a ref-objects component's properties.
func ParseRefObjects(component string, props *runtime.RawExtension) ([]ObjectRef, error) {
	bad := func(format string, args ...any) error {
		return problem.New(ReasonInvalidObjectReference, "component %q: %s", component, fmt.Sprintf(format, args...))
	}
	if props == nil || len(props.Raw) == 0 {
		return nil, bad("properties.objects is missing")
	}
	var p refObjectsProps
	if err := json.Unmarshal(props.Raw, &p); err != nil {
		return nil, bad("properties: %v", err)
	}
	if len(p.Objects) == 0 {
		return nil, bad("properties.objects is empty")
	}
	for i, o := range p.Objects {
		switch {
		case o.Name == "":
			return nil, bad("objects[%d] has no name (selecting by labels is not supported yet)", i)
		case o.Kind != "" && o.APIVersion == "":
			return nil, bad("objects[%d] (%s %s) has kind but no apiVersion", i, o.Kind, o.Name)
		case o.Kind != "" && o.Resource != "":
			return nil, bad("objects[%d] (%s) has both kind and resource: give one", i, o.Name)
		case o.Kind == "" && o.Resource == "":
			return nil, bad("objects[%d] (%s) needs apiVersion+kind or resource", i, o.Name)
		case o.APIVersion != "":
			if _, err := schema.ParseGroupVersion(o.APIVersion); err != nil || strings.Count(o.APIVersion, "/") > 1 {
				return nil, bad("objects[%d] (%s %s): apiVersion %q is not group/version", i, o.Kind, o.Name, o.APIVersion)
			}
		}
	}
	return p.Objects, nil
}
