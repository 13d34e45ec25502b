package liveread

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Identity is the person the hub's API server vouches for.
type Identity struct {
	User   string
	Groups []string
	Extra  map[string][]string
}

// FrontProxy is whom the server believes about who is asking: requests
// under a client certificate of CAs (with one of AllowedNames, when any)
// name the person in the headers below. It is the hub's own requestheader
// configuration, as every aggregated API server reads it.
type FrontProxy struct {
	CAs           *x509.CertPool
	AllowedNames  []string
	UserHeaders   []string
	GroupHeaders  []string
	ExtraPrefixes []string
}

// AuthenticationConfigMap is where the hub's API server publishes its
// requestheader configuration (kube-system).
const AuthenticationConfigMap = "extension-apiserver-authentication"

// LoadFrontProxy reads the hub's requestheader configuration.
func LoadFrontProxy(ctx context.Context, cs kubernetes.Interface) (*FrontProxy, error) {
	cm, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, AuthenticationConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read the hub's front-proxy configuration (kube-system/%s): %w", AuthenticationConfigMap, err)
	}
	ca := cm.Data["requestheader-client-ca-file"]
	if ca == "" {
		return nil, errors.New("the hub's API server has no front proxy (--requestheader-client-ca-file): it cannot serve aggregated APIs, live reads among them")
	}
	f := &FrontProxy{CAs: x509.NewCertPool()}
	if !f.CAs.AppendCertsFromPEM([]byte(ca)) {
		return nil, errors.New("the hub's requestheader-client-ca-file holds no certificate")
	}
	for key, into := range map[string]*[]string{
		"requestheader-allowed-names":        &f.AllowedNames,
		"requestheader-username-headers":     &f.UserHeaders,
		"requestheader-group-headers":        &f.GroupHeaders,
		"requestheader-extra-headers-prefix": &f.ExtraPrefixes,
	} {
		if v := cm.Data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), into); err != nil {
				return nil, fmt.Errorf("the hub's %s: %w", key, err)
			}
		}
	}
	if len(f.UserHeaders) == 0 {
		return nil, errors.New("the hub's API server names no --requestheader-username-headers: no one could be told apart")
	}
	return f, nil
}

// errNotFromHub: the request did not come through the hub's API server.
var errNotFromHub = errors.New("not from the hub's API server: only requests it forwards (under its front-proxy certificate) are served")

// fromHub says whether r came with the front proxy's certificate.
func (f *FrontProxy) fromHub(r *http.Request) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return errNotFromHub
	}
	certs := r.TLS.PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: f.CAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("%w: %v", errNotFromHub, err)
	}
	if len(f.AllowedNames) > 0 && !slices.Contains(f.AllowedNames, certs[0].Subject.CommonName) {
		return fmt.Errorf("%w: %q is not an allowed front-proxy name", errNotFromHub, certs[0].Subject.CommonName)
	}
	return nil
}

// Identify returns the person a request from the hub names; a request
// that names no one, or does not come from the hub, is refused.
func (f *FrontProxy) Identify(r *http.Request) (Identity, error) {
	if err := f.fromHub(r); err != nil {
		return Identity{}, err
	}
	var id Identity
	for _, h := range f.UserHeaders {
		if v := r.Header.Get(h); v != "" {
			id.User = v
			break
		}
	}
	if id.User == "" {
		return Identity{}, errors.New("the hub named no user")
	}
	for _, h := range f.GroupHeaders {
		id.Groups = append(id.Groups, r.Header.Values(h)...)
	}
	for name, values := range r.Header {
		for _, prefix := range f.ExtraPrefixes {
			if key, ok := strings.CutPrefix(strings.ToLower(name), strings.ToLower(prefix)); ok && key != "" {
				// Extra keys travel escaped (RFC 3986), as the hub writes them.
				if k, err := url.PathUnescape(key); err == nil {
					key = k
				}
				if id.Extra == nil {
					id.Extra = map[string][]string{}
				}
				id.Extra[key] = append(id.Extra[key], values...)
			}
		}
	}
	return id, nil
}
