// Package liveread holds what the hub needs to serve Flotilla's live reads
// through its own API server (liveread.yaml): the APIService of
// query.flotilla.dev, the Service it forwards to (the dispatcher's
// live-read API), the right of every authenticated person to ask (the
// dispatcher then checks they may read the object's Application), and the
// dispatcher's rights to read the front-proxy configuration and ask
// SubjectAccessReviews. Install puts them on a hub.
package liveread

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// Manifest is liveread.yaml.
//
//go:embed liveread.yaml
var Manifest []byte

// Namespace and Service name where the hub's API server finds the
// dispatcher's live-read API; its serving certificate must name
// ServiceHost.
const (
	Namespace   = "flotilla-system"
	Service     = "flotilla-live-read"
	ServiceHost = Service + "." + Namespace + ".svc"
	APIService  = "v1alpha1.query.flotilla.dev"
)

// Options of Install.
type Options struct {
	// CABundle is the PEM CA the dispatcher's live-read certificate is
	// signed by (the hub verifies it).
	CABundle []byte
	// Address, when set (host:port), is where the live-read API listens
	// outside the hub's cluster (a dispatcher on a developer's machine):
	// the Service becomes an ExternalName of host, the APIService's port
	// port. Empty: the Service selects the dispatcher's pods.
	Address string
}

// Objects returns liveread.yaml's objects with o applied.
func Objects(o Options) ([]*unstructured.Unstructured, error) {
	if len(o.CABundle) == 0 {
		return nil, errors.New("live reads: a CA bundle is required: the hub verifies the dispatcher's certificate with it")
	}
	var host string
	var port int64
	if o.Address != "" {
		h, p, err := net.SplitHostPort(o.Address)
		if err != nil {
			return nil, fmt.Errorf("live reads: address %q: %w", o.Address, err)
		}
		if port, err = strconv.ParseInt(p, 10, 32); err != nil || port <= 0 || port > 65535 {
			return nil, fmt.Errorf("live reads: address %q: bad port", o.Address)
		}
		if net.ParseIP(h) != nil {
			// An ExternalName must be a DNS name.
			return nil, fmt.Errorf("live reads: address %q: give a host name (localhost), not an IP", o.Address)
		}
		host = h
	}
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(Manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read liveread.yaml: %w", err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("decode liveread.yaml: %w", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		switch u.GetKind() {
		case "APIService":
			// caBundle is bytes: JSON carries them base64-encoded.
			if err := unstructured.SetNestedField(u.Object, base64.StdEncoding.EncodeToString(o.CABundle), "spec", "caBundle"); err != nil {
				return nil, err
			}
			if host != "" {
				if err := unstructured.SetNestedField(u.Object, port, "spec", "service", "port"); err != nil {
					return nil, err
				}
			}
		case "Service":
			if host != "" {
				u.Object["spec"] = map[string]any{
					"type": "ExternalName", "externalName": host,
					"ports": []any{map[string]any{"name": "https", "port": port}},
				}
			}
		}
		objs = append(objs, u)
	}
	return objs, nil
}

var namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

var resources = map[string]schema.GroupVersionResource{
	"Service":            {Version: "v1", Resource: "services"},
	"APIService":         {Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
}

// Install applies the objects on the hub at cfg (server-side apply), the
// namespace first.
func Install(ctx context.Context, cfg *rest.Config, o Options) error {
	objs, err := Objects(o)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("install live reads: %w", err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": Namespace}}}
	if _, err := dyn.Resource(namespaces).Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("install live reads: namespace %s: %w", Namespace, err)
	}
	for _, u := range objs {
		gvr, ok := resources[u.GetKind()]
		if !ok {
			return fmt.Errorf("install live reads: liveread.yaml holds a %s", u.GetKind())
		}
		var ri dynamic.ResourceInterface = dyn.Resource(gvr)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(gvr).Namespace(u.GetNamespace())
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "flotilla-install", Force: true}); err != nil {
			return fmt.Errorf("install live reads: %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}
