// Package release owns what a release is: resolving an Application on the
// hub into its workflow steps, its policies and an immutable snapshot of every
// referenced object, taken once, so production later gets byte for byte what
// test got. Everything a user can get wrong is reported as a *Problem with a
// CamelCase reason and a message naming the missing or wrong thing.
package release

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1alpha1"
	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/grant"
	"github.com/flotilla-dev/flotilla/pkg/problem"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
	"github.com/flotilla-dev/flotilla/pkg/workflow"
)

// ComponentRefObjects is the one component type Flotilla deploys.
const ComponentRefObjects = "ref-objects"

// PolicyTopology places components on clusters.
const PolicyTopology = "topology"

// Reasons of the problems resolving reports.
const (
	ReasonWorkflowNotFound         = "WorkflowNotFound"
	ReasonPolicyNotFound           = "PolicyNotFound"
	ReasonUnsupportedPolicyType    = "UnsupportedPolicyType"
	ReasonUnsupportedComponentType = "UnsupportedComponentType"
	ReasonObjectNotFound           = "ObjectNotFound"
	ReasonInvalidObjectReference   = "InvalidObjectReference"
	ReasonNoWorkflow               = "NoWorkflow"
	ReasonInvalidPolicy            = "InvalidPolicy"
)

// Hub is what resolving reads from the hub. Getters return (nil, nil) for an
// object that does not exist.
type Hub interface {
	Workflow(ctx context.Context, ns, name string) (*v1alpha1.Workflow, error)
	Policy(ctx context.Context, ns, name string) (*v1alpha1.Policy, error)
	// Object fetches a referenced object; ref has GVK or GVR filled by
	// Parse. An object of a cluster-scoped kind comes without a namespace.
	Object(ctx context.Context, ns string, ref ObjectRef) (*unstructured.Unstructured, error)
	// Grants are what hub admins granted Applications beyond their namespace.
	Grants(ctx context.Context) (grant.Grants, error)
	// ClusterLabels are the labels of a ManagedCluster (found false: none of that name).
	ClusterLabels(ctx context.Context, name string) (labels map[string]string, found bool, err error)
}

// Spec is everything a release is cut from.
type Spec struct {
	Steps    []workflow.StepSpec
	Policies []events.Policy
	Objects  []*unstructured.Unstructured
	// TakeOver are the kinds the Application's take-over policies let it
	// adopt where objects of them exist ("*": every kind).
	TakeOver []string
	// ReadOnly are the kinds its read-only policies select ("*": every
	// kind): read in the clusters, for health, never written or pruned.
	ReadOnly []string
}

// Key is what makes a new release: the publishVersion when set, else the
// Application's generation (its spec).
func Key(app *v1beta1.Application) string {
	if pv, ok := app.Annotations[v1beta1.AnnotationPublishVersion]; ok && pv != "" {
		return "publishVersion:" + pv
	}
	return "generation:" + strconv.FormatInt(app.Generation, 10)
}

// Resolve reads the workflow, the policies its deploy steps name, and every
// referenced object, and validates them all before anything is dispatched.
func Resolve(ctx context.Context, hub Hub, app *v1beta1.Application) (*Spec, error) {
	ns := app.Namespace
	steps, err := resolveSteps(ctx, hub, app)
	if err != nil {
		return nil, err
	}
	policies, err := resolvePolicies(ctx, hub, app, steps)
	if err != nil {
		return nil, err
	}
	takeOver, err := selectedKinds(app, PolicyTakeOver)
	if err != nil {
		return nil, err
	}
	readOnly, err := selectedKinds(app, PolicyReadOnly)
	if err != nil {
		return nil, err
	}
	spec := &Spec{Steps: steps, Policies: policies, TakeOver: takeOver, ReadOnly: readOnly}
	for _, comp := range app.Spec.Components {
		if comp.Type != ComponentRefObjects {
			return nil, problem.New(ReasonUnsupportedComponentType, "component %q has type %q: Flotilla supports %q", comp.Name, comp.Type, ComponentRefObjects)
		}
		refs, err := ParseRefObjects(comp.Name, comp.Properties)
		if err != nil {
			return nil, err
		}
		for _, ref := range refs {
			if ref.Namespace != "" && ref.Namespace != ns {
				return nil, problem.New(ReasonInvalidObjectReference, "component %q references %s in namespace %q: only objects in the Application's namespace %q can be referenced", comp.Name, ref, ref.Namespace, ns)
			}
			obj, err := hub.Object(ctx, ns, ref)
			if err != nil {
				return nil, fmt.Errorf("component %q: get %s: %w", comp.Name, ref, err)
			}
			if obj == nil {
				return nil, problem.New(ReasonObjectNotFound, "%s referenced by component %q not found in namespace %q", ref, comp.Name, ns)
			}
			spec.Objects = append(spec.Objects, obj)
		}
	}
	if err := confine(ctx, hub, ns, spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// confine refuses a release that reaches beyond what the Application's
// namespace is granted (package grant): a topology's target namespace, a
// cluster a topology names, an object of a cluster-scoped kind. Refused
// here, before any step runs, nothing of it is applied anywhere. Clusters
// chosen by label are only ever chosen among those granted (dispatcher).
func confine(ctx context.Context, hub Hub, ns string, spec *Spec) error {
	grants, err := hub.Grants(ctx)
	if err != nil {
		return fmt.Errorf("read grants: %w", err)
	}
	for _, p := range spec.Policies {
		if p.Type != PolicyTopology {
			continue
		}
		var topo struct {
			Clusters  []string `json:"clusters"`
			Namespace string   `json:"namespace"`
		}
		if len(p.Properties) > 0 {
			if err := json.Unmarshal(p.Properties, &topo); err != nil {
				return problem.New(ReasonInvalidPolicy, "policy %q: properties: %v", p.Name, err)
			}
		}
		if err := grants.TargetNamespace(ns, topo.Namespace); err != nil {
			return within("policy "+strconv.Quote(p.Name), err)
		}
		for _, c := range topo.Clusters {
			lbls, found, err := hub.ClusterLabels(ctx, c)
			if err != nil {
				return fmt.Errorf("policy %q: read ManagedCluster %s: %w", p.Name, c, err)
			}
			if !found {
				continue // the dispatcher says the cluster is not there, when the step runs
			}
			if err := grants.Cluster(ns, c, lbls); err != nil {
				return within("policy "+strconv.Quote(p.Name), err)
			}
		}
	}
	for _, o := range spec.Objects {
		if o.GetNamespace() == "" {
			if err := grants.ClusterScopedKind(ns, o.GroupVersionKind().GroupKind()); err != nil {
				return within(o.GetKind()+" "+o.GetName(), err)
			}
		}
	}
	return nil
}

// within says where a problem is: the same reason, its message prefixed.
func within(where string, err error) error {
	if p, ok := problem.As(err); ok {
		return problem.New(p.Reason, "%s: %s", where, p.Message)
	}
	return fmt.Errorf("%s: %w", where, err)
}

func resolveSteps(ctx context.Context, hub Hub, app *v1beta1.Application) ([]workflow.StepSpec, error) {
	wf := app.Spec.Workflow
	switch {
	case wf != nil && wf.Ref != "":
		obj, err := hub.Workflow(ctx, app.Namespace, wf.Ref)
		if err != nil {
			return nil, fmt.Errorf("get Workflow %s/%s: %w", app.Namespace, wf.Ref, err)
		}
		if obj == nil {
			return nil, problem.New(ReasonWorkflowNotFound, "Workflow %q referenced by spec.workflow.ref not found in namespace %q", wf.Ref, app.Namespace)
		}
		return workflow.Parse(obj.Mode, obj.Steps)
	case wf != nil && len(wf.Steps) > 0:
		return workflow.Parse(wf.Mode, wf.Steps)
	}
	// No workflow: deploy with every inline topology policy at once, as KubeVela does.
	var names []string
	for _, p := range app.Spec.Policies {
		if p.Type == PolicyTopology {
			names = append(names, p.Name)
		}
	}
	if len(names) == 0 {
		return nil, problem.New(ReasonNoWorkflow, "the Application has no spec.workflow and no topology policy: nothing says where to deploy")
	}
	return []workflow.StepSpec{{Name: "deploy", Type: workflow.StepTypeDeploy, Policies: names, Auto: true}}, nil
}

func resolvePolicies(ctx context.Context, hub Hub, app *v1beta1.Application, steps []workflow.StepSpec) ([]events.Policy, error) {
	inline := map[string]v1beta1.AppPolicy{}
	for _, p := range app.Spec.Policies {
		inline[p.Name] = p
	}
	seen := map[string]bool{}
	var out []events.Policy
	for _, s := range steps {
		for _, name := range s.Policies {
			if seen[name] {
				continue
			}
			seen[name] = true
			var p events.Policy
			if ip, ok := inline[name]; ok {
				p = events.Policy{Name: name, Type: ip.Type, Properties: raw(ip.Properties)}
			} else {
				obj, err := hub.Policy(ctx, app.Namespace, name)
				if err != nil {
					return nil, fmt.Errorf("get Policy %s/%s: %w", app.Namespace, name, err)
				}
				if obj == nil {
					return nil, problem.New(ReasonPolicyNotFound, "policy %q used by step %q not found: no inline policy of that name and no Policy %s/%s", name, s.Name, app.Namespace, name)
				}
				p = events.Policy{Name: name, Type: obj.Type, Properties: raw(obj.Properties)}
			}
			if p.Type != PolicyTopology {
				return nil, problem.New(ReasonUnsupportedPolicyType, "policy %q used by step %q has type %q: a deploy step supports %q", name, s.Name, p.Type, PolicyTopology)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// Snapshot cleans the objects (Clean) and returns them as canonical JSON with
// the sha256 digest of the whole.
func Snapshot(objs []*unstructured.Unstructured) ([]json.RawMessage, string, error) {
	out := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		data, err := json.Marshal(Clean(o).Object) // map keys marshal sorted: canonical
		if err != nil {
			return nil, "", fmt.Errorf("snapshot %s %s: %w", o.GetKind(), o.GetName(), err)
		}
		out = append(out, data)
	}
	digest, err := snapshot.Digest(out)
	if err != nil {
		return nil, "", err
	}
	return out, digest, nil
}

// Clean returns a copy of obj without what belongs to the hub's copy
// (status, uid, resourceVersion, managedFields, creationTimestamp,
// generation, ownerReferences, ...), keeping labels and annotations.
func Clean(obj *unstructured.Unstructured) *unstructured.Unstructured {
	c := obj.DeepCopy()
	delete(c.Object, "status")
	for _, f := range []string{"uid", "resourceVersion", "managedFields", "creationTimestamp", "generation",
		"ownerReferences", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	return c
}

func raw(r *runtime.RawExtension) json.RawMessage {
	if r == nil || len(r.Raw) == 0 || string(r.Raw) == "null" {
		return nil
	}
	return json.RawMessage(r.Raw)
}

// KubeVela's policies that select objects of an Application by kind.
const (
	// PolicyTakeOver lets an Application adopt objects it did not create.
	PolicyTakeOver = "take-over"
	// PolicyReadOnly makes objects read-only: the Application expects
	// them to exist and checks their health, and never writes them.
	PolicyReadOnly = "read-only"
)

// selectedKinds reads the kinds the Application's inline policies of type
// typ select (KubeVela's shape: rules[].selector.resourceTypes, a rule
// without one for every kind).
func selectedKinds(app *v1beta1.Application, typ string) ([]string, error) {
	var kinds []string
	for _, p := range app.Spec.Policies {
		if p.Type != typ {
			continue
		}
		var props struct {
			Rules []struct {
				Selector struct {
					ResourceTypes []string `json:"resourceTypes"`
				} `json:"selector"`
			} `json:"rules"`
		}
		if raw := raw(p.Properties); len(raw) > 0 {
			if err := json.Unmarshal(raw, &props); err != nil {
				return nil, problem.New(ReasonInvalidPolicy, "policy %q (%s): properties: %v", p.Name, typ, err)
			}
		}
		if len(props.Rules) == 0 {
			return []string{"*"}, nil
		}
		for _, r := range props.Rules {
			if len(r.Selector.ResourceTypes) == 0 {
				return []string{"*"}, nil
			}
			kinds = append(kinds, r.Selector.ResourceTypes...)
		}
	}
	return kinds, nil
}
