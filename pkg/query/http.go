package query

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The live-read API the hub's API server serves through its aggregation
// layer (deploy/liveread): the hub authenticates the person asking and
// Flotilla authorizes them by the hub's RBAC before any agent is asked.
const (
	Group    = "query.flotilla.dev"
	Version  = "v1alpha1"
	Resource = "liveobjects"
)

// GroupVersionPath is the API's root on the hub.
const GroupVersionPath = "/apis/" + Group + "/" + Version

// URL is where the hub serves req as it is in cluster: the object's own
// namespace and name in the path (so the hub's RBAC sees them), what it is
// and where in the query.
func URL(cluster string, req Request) *url.URL {
	p := GroupVersionPath
	if req.Namespace != "" {
		p += "/namespaces/" + req.Namespace
	}
	p += "/" + Resource + "/" + req.Name
	q := url.Values{"cluster": {cluster}}
	for k, v := range map[string]string{"group": req.Group, "version": req.Version, "kind": req.Kind, "resource": req.Resource} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if req.Table {
		q.Set("table", "true")
	}
	return &url.URL{Path: p, RawQuery: q.Encode()}
}

// FromURL reads a live read back from its URL: the cluster and the request.
func FromURL(u *url.URL) (cluster string, req Request, err error) {
	rest, ok := strings.CutPrefix(u.Path, GroupVersionPath+"/")
	if !ok {
		return "", req, fmt.Errorf("not a live read: %s", u.Path)
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 4 && parts[0] == "namespaces" && parts[1] != "" && parts[2] == Resource:
		req.Namespace, req.Name = parts[1], parts[3]
	case len(parts) == 2 && parts[0] == Resource:
		req.Name = parts[1]
	default:
		return "", req, fmt.Errorf("not a live read: %s (want %s/[namespaces/NS/]%s/NAME)", u.Path, GroupVersionPath, Resource)
	}
	q := u.Query()
	cluster = q.Get("cluster")
	if cluster == "" {
		return "", req, errors.New("cluster is required (?cluster=NAME)")
	}
	if err := ValidCluster(cluster); err != nil {
		return "", req, err
	}
	req.Group, req.Version, req.Kind, req.Resource = q.Get("group"), q.Get("version"), q.Get("kind"), q.Get("resource")
	if t := q.Get("table"); t != "" {
		if req.Table, err = strconv.ParseBool(t); err != nil {
			return "", req, fmt.Errorf("table: %w", err)
		}
	}
	return cluster, req, req.Validate()
}
