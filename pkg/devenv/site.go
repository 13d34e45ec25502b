package devenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	natsconf "github.com/flotilla-dev/flotilla/deploy/nats"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/linkproxy"
	"github.com/flotilla-dev/flotilla/pkg/site"
	"github.com/nats-io/nats.go"
)

// SiteName is the air-gapped site `make up` puts the second cluster in
// (the seed's production cluster): its own NATS leaf node, whose one link
// to the hub runs through a proxy that `make link-down` cuts.
const SiteName = "edge"

// siteCluster is the cluster at the site ("" with fewer than two).
func siteCluster(clusters []string) string {
	if len(clusters) < 2 {
		return ""
	}
	return clusters[1]
}

// leafUser is the NATS user the site's leaf node logs in to the hub as.
func leafUser(name string) string { return "leaf-" + name }

// writeSiteConfig writes the site's leaf node configuration: its own
// JetStream domain and store, TLS, the hub's operator and accounts (its
// agents log in with the credentials the hub signs, in the clusters'
// account as at the hub), and two links to the hub through the site's
// proxy: the Flotilla account's, which carries no report as a core message
// (site.LinkDeny: reports go only by the sources the hub's dispatcher sets
// up), and the system account's, over which the hub's account updates
// (revocations) reach the site's resolver.
func (e *Env) writeSiteConfig(o Options, port int, hubLeafAddr string) (string, error) {
	dir := filepath.Join(o.Dir, "site-"+SiteName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	key, err := storeKey(filepath.Join(o.Dir, "nats-keys", "site-"+SiteName+"-jetstream.key"))
	if err != nil {
		return "", err
	}
	auth, err := creds.LoadOrCreate(e.Authority())
	if err != nil {
		return "", err
	}
	conf, err := natsconf.SiteConfig(auth, natsconf.Site{
		Name: SiteName, StoreDir: dir, ResolverDir: filepath.Join(dir, "accounts"), HubURL: "tls://" + hubLeafAddr,
		LinkCreds: e.Creds(leafUser(SiteName)), SystemCreds: e.Creds(leafSystemUser(SiteName)), CA: e.TLS.CA, LinkDeny: site.LinkDeny(),
	})
	if err != nil {
		return "", err
	}
	conf["host"], conf["port"], conf["server_name"] = "127.0.0.1", port, "flotilla-site-"+SiteName
	conf["jetstream"] = map[string]any{"store_dir": dir, "domain": SiteName, "cipher": "chachapoly", "key": key, "sync_interval": natsconf.SyncAlways}
	conf["tls"] = map[string]any{"cert_file": e.TLS.Cert, "key_file": e.TLS.Key, "timeout": 5}
	data, err := natsconf.Encode(conf)
	if err != nil {
		return "", err
	}
	path := filepath.Join(o.Dir, "site-"+SiteName+".conf")
	return path, os.WriteFile(path, data, 0o600)
}

// siteDispatcherUser is the dispatcher's user in a site's account at the
// hub.
func siteDispatcherUser(name string) string { return "dispatcher-site-" + name }

// leafSystemUser is the system-account user of the site's second link.
func leafSystemUser(name string) string { return "leaf-" + name + "-sys" }

// AgentNATSURL is where a cluster's agent logs in: its site's leaf node,
// or the hub's NATS.
func (e *Env) AgentNATSURL(cluster string) string {
	if cluster == e.SiteCluster && e.SiteNATSURL != "" {
		return e.SiteNATSURL
	}
	return e.NATSURL
}

// LinkDown cuts the site's link to the hub (mode: reset or blackhole).
func (e *Env) LinkDown(mode linkproxy.Mode) error {
	if e.link == nil {
		return fmt.Errorf("devenv: no site")
	}
	e.link.Down(mode)
	return e.writeLinkState()
}

// LinkUp restores the site's link.
func (e *Env) LinkUp() error {
	if e.link == nil {
		return fmt.Errorf("devenv: no site")
	}
	e.link.Up()
	return e.writeLinkState()
}

// Link says whether the site's link is up, and since when.
func (e *Env) Link() (up bool, since time.Time) {
	if e.link == nil {
		return false, time.Time{}
	}
	return e.link.State()
}

// writeLinkState records the link in Dir/link ("up|down <RFC 3339 time>"),
// for `make link-down` and `make link-up` to read back.
func (e *Env) writeLinkState() error {
	up, since := e.link.State()
	state := "down"
	if up {
		state = "up"
	}
	line := state + " " + since.UTC().Format(time.RFC3339Nano) + "\n"
	return os.WriteFile(filepath.Join(e.Dir, "link"), []byte(line), 0o644)
}

// startLink starts the site's link proxy to the hub's leaf port.
func (e *Env) startLink(hubLeafPort int) (string, error) {
	p, err := linkproxy.Listen("127.0.0.1:0", "127.0.0.1:"+strconv.Itoa(hubLeafPort))
	if err != nil {
		return "", err
	}
	e.link = p
	return p.Addr(), e.writeLinkState()
}

// AgentLogin is how a cluster's agent logs in where AgentNATSURL says
// (the hub's NATS or its site's leaf node): the credential the hub signed
// it.
func (e *Env) AgentLogin(cluster string) (nats.Option, error) {
	return nats.UserCredentials(e.Creds("agent-" + cluster)), nil
}

// BundleDir is where the site's agent reads hand-carried bundles ("" for
// a cluster that is not at the site).
func (e *Env) BundleDir(cluster string) string {
	if cluster != e.SiteCluster {
		return ""
	}
	return filepath.Join(e.Dir, "site-"+SiteName, "bundles")
}
