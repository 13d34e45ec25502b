package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/query"
)

// queryWorkers is how many live queries an agent answers at once.
const queryWorkers = 4

// answer serves one live query: an object Flotilla manages in this cluster,
// NotFound as the API server says it, and Forbidden for anything else.
func (a *Agent) answer(msg *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := a.lookup(ctx, msg.Data)
	data, err := json.Marshal(resp)
	if err != nil {
		a.log.Warn("encode query answer", "err", err)
		return
	}
	if err := msg.Respond(data); err != nil {
		// The asker times out; nothing else to do.
		a.log.Warn("answer query", "err", err)
	}
}

func (a *Agent) lookup(ctx context.Context, data []byte) query.Response {
	fail := func(code int, reason metav1.StatusReason, format string, args ...any) query.Response {
		return query.Response{Error: &query.Error{Code: code, Reason: string(reason), Message: fmt.Sprintf(format, args...)}}
	}
	var req query.Request
	if err := json.Unmarshal(data, &req); err != nil {
		return fail(http.StatusBadRequest, metav1.StatusReasonBadRequest, "malformed query: %v", err)
	}
	if err := req.Validate(); err != nil {
		return fail(http.StatusBadRequest, metav1.StatusReasonBadRequest, "malformed query: %v", err)
	}
	gvr := schema.GroupVersionResource{Group: req.Group, Version: req.Version, Resource: req.Resource}
	namespaced := req.Namespace != ""
	if req.Kind != "" {
		m, err := a.applier.Mapping(schema.GroupVersionKind{Group: req.Group, Version: req.Version, Kind: req.Kind})
		if err != nil {
			return fail(http.StatusNotFound, metav1.StatusReasonNotFound, "the server doesn't have a resource type %q", req.Kind)
		}
		gvr = m.Resource
	}
	ri := a.dyn.Resource(gvr)
	var obj any
	var err error
	if namespaced {
		obj, err = ri.Namespace(req.Namespace).Get(ctx, req.Name, metav1.GetOptions{})
	} else {
		obj, err = ri.Get(ctx, req.Name, metav1.GetOptions{})
	}
	gr := gvr.GroupResource().String()
	if apierrors.IsNotFound(err) {
		return fail(http.StatusNotFound, metav1.StatusReasonNotFound, "%s %q not found", gr, req.Name)
	}
	if err != nil {
		return fail(http.StatusInternalServerError, metav1.StatusReasonInternalError, "get %s %q: %v", gr, req.Name, err)
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fail(http.StatusInternalServerError, metav1.StatusReasonInternalError, "get %s %q: unexpected %T", gr, req.Name, obj)
	}
	if u.GetName() != req.Name || u.GetNamespace() != req.Namespace {
		return fail(http.StatusInternalServerError, metav1.StatusReasonInternalError, "get %s %q: the API server answered with %s/%s", gr, req.Name, u.GetNamespace(), u.GetName())
	}
	if u.GetLabels()[apply.LabelManagedBy] != apply.ManagedByValue {
		return fail(http.StatusForbidden, metav1.StatusReasonForbidden, "%s %q is not managed by Flotilla: the agent answers only about objects Flotilla applied", gr, req.Name)
	}
	// By what came back, not by what was asked: a Secret is redacted
	// however the request named it.
	if u.GroupVersionKind().GroupKind() == secretKind {
		redact(u)
	}
	raw, err := json.Marshal(u)
	if err != nil {
		return fail(http.StatusInternalServerError, metav1.StatusReasonInternalError, "encode: %v", err)
	}
	resp := query.Response{Object: raw}
	if req.Table {
		// The cluster's own API server prints the table, exactly as kubectl shows it.
		path := "/api/" + gvr.Version
		if gvr.Group != "" {
			path = "/apis/" + gvr.Group + "/" + gvr.Version
		}
		if namespaced {
			path += "/namespaces/" + req.Namespace
		}
		path += "/" + gvr.Resource + "/" + req.Name
		// includeObject=None: the rows carry no metadata (a Secret's
		// last-applied annotation would repeat its values).
		table, err := a.cs.CoreV1().RESTClient().Get().AbsPath(path).Param("includeObject", "None").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json").Do(ctx).Raw()
		if err != nil {
			return fail(http.StatusInternalServerError, metav1.StatusReasonInternalError, "table of %s %q: %v", gr, req.Name, err)
		}
		resp.Table = table
	}
	return resp
}

var secretKind = schema.GroupKind{Kind: "Secret"}

// Redacted is what a Secret's values read as in a live answer.
const Redacted = "REDACTED"

// redact blanks a Secret's values, and what could repeat them (kubectl's
// last-applied annotation), before it leaves the cluster: a live read
// shows a Secret's keys and type, never its data.
func redact(u *unstructured.Unstructured) {
	for _, field := range []string{"data", "stringData"} {
		values, found, _ := unstructured.NestedMap(u.Object, field)
		if !found {
			continue
		}
		for k := range values {
			values[k] = Redacted
		}
		_ = unstructured.SetNestedMap(u.Object, values, field)
	}
	if ann := u.GetAnnotations(); ann != nil {
		delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		u.SetAnnotations(ann)
	}
	unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
}
