// Package liveread owns the hub's live-read API: query.flotilla.dev, an
// API the hub's API server serves through its aggregation layer
// (deploy/liveread). The hub authenticates the person asking, as for any
// other request; this server believes it only under the hub's front-proxy
// certificate, asks the cluster's agent for the object, and shows it only
// to someone the hub's RBAC lets read the Application it belongs to
// (a SubjectAccessReview). So `kubectl flotilla get` follows the hub's
// RBAC, whatever the person's NATS rights, and no person needs any: only
// this server asks agents.
package liveread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/api/core/v1beta1"
	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/query"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Asker asks a cluster's agent (query.Do over NATS).
type Asker interface {
	Ask(ctx context.Context, cluster string, req query.Request) (*query.Response, error)
}

// AskFunc is an Asker of a function.
type AskFunc func(ctx context.Context, cluster string, req query.Request) (*query.Response, error)

// Ask calls f.
func (f AskFunc) Ask(ctx context.Context, cluster string, req query.Request) (*query.Response, error) {
	return f(ctx, cluster, req)
}

// Outcomes of a live read (flotilla_live_reads_total's outcome).
const (
	OutcomeServed          = "served"
	OutcomeUnauthenticated = "unauthenticated"
	OutcomeForbidden       = "forbidden"
	OutcomeBadRequest      = "bad_request"
	OutcomeRefused         = "refused_by_cluster"
	OutcomeThrottled       = "throttled"
	OutcomeError           = "error"
)

// perPerson is how many live reads one person may have under way: a
// person cannot keep the agents busy for everyone else.
const perPerson = 4

// inFlight counts each person's reads under way.
type inFlight struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *inFlight) take(user string) (release func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[user] >= perPerson {
		return nil, false
	}
	f.n[user]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.n[user]--; f.n[user] == 0 {
			delete(f.n, user)
		}
	}, true
}

// Applications lists the names of a hub namespace's Applications.
type Applications interface {
	Names(ctx context.Context, namespace string) ([]string, error)
}

// HubApplications lists Applications with the hub's dynamic client.
type HubApplications struct{ Client dynamic.Interface }

// Names lists the names of namespace's Applications (metadata only).
func (h HubApplications) Names(ctx context.Context, namespace string) ([]string, error) {
	list, err := h.Client.Resource(v1beta1.ApplicationResource).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for _, it := range list.Items {
		names = append(names, it.GetName())
	}
	return names, nil
}

// Server serves live reads.
type Server struct {
	apps   Applications
	busy   *inFlight
	cs     kubernetes.Interface
	ask    Asker
	proxy  *FrontProxy
	log    *slog.Logger
	tracer trace.Tracer
	reads  *prometheus.CounterVec
}

// New returns a server that asks agents with ask, authorizes with the
// hub's SubjectAccessReviews (cs), finds Applications in apps and believes
// proxy about who asks.
func New(cs kubernetes.Interface, apps Applications, ask Asker, proxy *FrontProxy, log *slog.Logger, ins telemetry.Instruments) (*Server, error) {
	s := &Server{cs: cs, apps: apps, busy: &inFlight{n: map[string]int{}}, ask: ask, proxy: proxy, log: log, tracer: ins.T(),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_live_reads_total",
			Help: "Live reads of objects in managed clusters (kubectl flotilla get), by outcome.",
		}, []string{"outcome"}),
	}
	if err := ins.Register(s.reads); err != nil {
		return nil, fmt.Errorf("live reads: %w", err)
	}
	return s, nil
}

// Handler serves the API's discovery and its reads.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET "+query.GroupVersionPath, s.discovery)
	mux.HandleFunc("GET "+query.GroupVersionPath+"/", s.read)
	return mux
}

// discovery tells the hub what the API serves (its availability check
// and discovery ask with the front-proxy certificate and no person).
func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if err := s.proxy.fromHub(r); err != nil {
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: query.Group + "/" + query.Version,
		APIResources: []metav1.APIResource{{Name: query.Resource, SingularName: "liveobject", Namespaced: true, Kind: "LiveObject", Verbs: metav1.Verbs{"get"}}},
	})
}

func (s *Server) read(w http.ResponseWriter, r *http.Request) {
	ctx, span := s.tracer.Start(r.Context(), "live read")
	defer span.End()
	outcome, code, reason, msg := s.serve(ctx, w, r)
	s.reads.WithLabelValues(outcome).Inc()
	span.SetAttributes(attribute.String("flotilla.live_read.outcome", outcome))
	if outcome == OutcomeServed {
		return
	}
	if outcome == OutcomeError {
		span.SetStatus(codes.Error, msg)
	}
	s.log.Info("live read refused", "outcome", outcome, "reason", reason, "message", msg)
	writeStatus(w, code, reason, msg)
}

// serve answers r, or returns why not (the outcome and the Status to send).
func (s *Server) serve(ctx context.Context, w http.ResponseWriter, r *http.Request) (outcome string, code int, reason metav1.StatusReason, msg string) {
	who, err := s.proxy.Identify(r)
	if err != nil {
		return OutcomeUnauthenticated, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, err.Error()
	}
	cluster, req, err := query.FromURL(r.URL)
	if err != nil {
		return OutcomeBadRequest, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error()
	}
	release, ok := s.busy.take(who.User)
	if !ok {
		return OutcomeThrottled, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			fmt.Sprintf("%s has %d live reads under way: try again when one is done", who.User, perPerson)
	}
	defer release()
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("flotilla.cluster", cluster), attribute.String("k8s.namespace.name", req.Namespace))
	// Every refusal reads the same, whatever the cluster holds: told
	// apart, they would say what exists and whose it is.
	forbidden := func(detail string) (string, int, metav1.StatusReason, string) {
		s.log.Info("live read forbidden", "user", who.User, "cluster", cluster, "namespace", req.Namespace, "name", req.Name, "why", detail)
		what := req.Resource
		if req.Kind != "" {
			what = req.Kind
		}
		return OutcomeForbidden, http.StatusForbidden, metav1.StatusReasonForbidden,
			fmt.Sprintf("%s may not read %s %q in namespace %q of cluster %s: that takes get on the Application it belongs to, on the hub",
				who.User, what, req.Name, req.Namespace, cluster)
	}
	resp, err := s.ask.Ask(ctx, cluster, req)
	var refusal *query.Error
	if err != nil {
		errors.As(err, &refusal)
		// The cluster's refusal (not found, not Flotilla's) or its silence
		// is told only to a reader of every Application of the namespace.
		allowed, aerr := s.may(ctx, who, req.Namespace, "")
		switch {
		case aerr != nil:
			return OutcomeError, http.StatusInternalServerError, metav1.StatusReasonInternalError, aerr.Error()
		case !allowed:
			return forbidden(err.Error())
		case refusal != nil:
			return OutcomeRefused, refusal.Code, metav1.StatusReason(refusal.Reason), refusal.Message
		default:
			return OutcomeError, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error()
		}
	}
	obj, err := asked(resp.Object, req)
	if err != nil {
		return forbidden(err.Error())
	}
	owner, err := s.owner(ctx, obj)
	if err != nil {
		return forbidden(err.Error())
	}
	allowed, err := s.may(ctx, who, owner.Namespace, owner.Name)
	if err != nil {
		return OutcomeError, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error()
	}
	if !allowed {
		return forbidden(fmt.Sprintf("may not get application %s", owner))
	}
	writeJSON(w, http.StatusOK, resp)
	return OutcomeServed, http.StatusOK, "", ""
}

// asked decodes the cluster's answer and checks it is the object asked
// for (an agent answers for its cluster only, and may lie).
func asked(raw json.RawMessage, req query.Request) (*metav1.PartialObjectMetadata, error) {
	var obj metav1.PartialObjectMetadata
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("the cluster's answer is no object: %v", err)
	}
	gv, _ := schema.ParseGroupVersion(obj.APIVersion)
	switch {
	case obj.Name != req.Name || obj.Namespace != req.Namespace:
		return nil, fmt.Errorf("the cluster answered with %s/%s", obj.Namespace, obj.Name)
	case req.Kind != "" && (obj.Kind != req.Kind || gv.Group != req.Group):
		return nil, fmt.Errorf("the cluster answered with a %s of %q", obj.Kind, gv.Group)
	}
	return &obj, nil
}

// owner is the Application obj belongs to: named by the labels the agent
// applies, which hold a long name cut and hashed (apply.LabelValue), so
// the name is found among the namespace's Applications.
func (s *Server) owner(ctx context.Context, obj *metav1.PartialObjectMetadata) (apply.App, error) {
	ns, label := obj.Labels[apply.LabelAppNS], obj.Labels[apply.LabelApplication]
	if ns == "" || label == "" {
		return apply.App{}, fmt.Errorf("%s %q names no Application (labels %s, %s)", obj.Kind, obj.Name, apply.LabelAppNS, apply.LabelApplication)
	}
	names, err := s.apps.Names(ctx, ns)
	if err != nil {
		return apply.App{}, fmt.Errorf("list the Applications of %s: %w", ns, err)
	}
	for _, name := range names {
		if apply.LabelValue(name) == label {
			return apply.App{Namespace: ns, Name: name}, nil
		}
	}
	return apply.App{}, fmt.Errorf("no Application of %s is labelled %q", ns, label)
}

// may asks the hub whether who may get the Application name of ns (every
// one there, when name is empty).
func (s *Server) may(ctx context.Context, who Identity, ns, name string) (bool, error) {
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range who.Extra {
		extra[k] = v
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: who.User, Groups: who.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: v1beta1.GroupVersion.Group, Resource: "applications", Name: name},
	}}
	res, err := s.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("ask the hub whether %s may get applications in %q: %w", who.User, ns, err)
	}
	return res.Status.Allowed, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}

// writeStatus answers as the API server does, so kubectl and client-go
// show "Error from server (Reason): message".
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: strings.TrimSpace(msg),
	})
}
