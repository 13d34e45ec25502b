// Package query owns the live, read-only queries the CLI sends to a
// cluster's agent over NATS request/reply (bus.QuerySubject),
// so the hub never needs a route into a managed cluster. An agent answers
// only about objects Flotilla manages there.
package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Request asks for one object, by kind (apiVersion+kind) or by resource.
type Request struct {
	Group     string `json:"group,omitempty"`
	Version   string `json:"version,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Resource  string `json:"resource,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Table asks also for the table kubectl prints (server-side printing).
	Table bool `json:"table,omitempty"`
}

// Validate reports what is missing or malformed. Every field ends up in
// the path of a request to the cluster's API server, so each must be what
// Kubernetes names allow: "secrets/" or ".." in a resource would reach
// another resource or namespace than the one asked for.
func (r Request) Validate() error {
	if r.Name == "" {
		return errors.New("name is required")
	}
	if r.Kind == "" && r.Resource == "" {
		return errors.New("kind or resource is required")
	}
	var errs []error
	check := func(field, value string, msgs []string) {
		if value != "" && len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s %q: %s", field, value, strings.Join(msgs, "; ")))
		}
	}
	check("group", r.Group, validation.IsDNS1123Subdomain(r.Group))
	check("version", r.Version, validation.IsDNS1123Label(r.Version))
	check("resource", r.Resource, validation.IsDNS1123Label(r.Resource))
	if r.Kind != "" && !kindPattern.MatchString(r.Kind) {
		errs = append(errs, fmt.Errorf("kind %q: not a kind (letters and digits, a letter first)", r.Kind))
	}
	check("namespace", r.Namespace, validation.IsDNS1123Label(r.Namespace))
	check("name", r.Name, content.IsPathSegmentName(r.Name))
	return errors.Join(errs...)
}

var kindPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,62}$`)

// ValidCluster reports whether cluster is a ManagedCluster's name (a DNS
// subdomain): never a subject wildcard.
func ValidCluster(cluster string) error {
	if msgs := validation.IsDNS1123Subdomain(cluster); len(msgs) > 0 {
		return fmt.Errorf("cluster %q: %s", cluster, strings.Join(msgs, "; "))
	}
	return nil
}

// Response is the object, or an error shaped like the API server's.
type Response struct {
	Object json.RawMessage `json:"object,omitempty"`
	// Table is a meta.k8s.io/v1 Table of the object, when asked for.
	Table json.RawMessage `json:"table,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// Error is a refusal: Code 400, 403 (not managed by Flotilla), 404, or 500;
// Reason as Kubernetes' StatusReason (NotFound, Forbidden, ...); Message as
// kubectl prints it (deployments.apps "demo" not found).
type Error struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Get asks cluster's agent for one object.
func Get(ctx context.Context, nc *nats.Conn, cluster string, req Request) (json.RawMessage, error) {
	resp, err := Do(ctx, nc, cluster, req)
	if err != nil {
		return nil, err
	}
	return resp.Object, nil
}

// Do sends a query and returns the whole answer; a refusal is an *Error.
func Do(ctx context.Context, nc *nats.Conn, cluster string, req Request) (*Response, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if err := ValidCluster(cluster); err != nil {
		return nil, err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(ctx, bus.QuerySubject(cluster), data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("cluster %s: no agent is connected", cluster)
	}
	if err != nil {
		return nil, fmt.Errorf("query cluster %s: %w", cluster, err)
	}
	var resp Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("query cluster %s: bad answer: %w", cluster, err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return &resp, nil
}
