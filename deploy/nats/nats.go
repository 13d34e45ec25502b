// Package nats holds Flotilla's NATS server configuration for production
// (nats.conf: TLS only, JetStream encrypted at rest, a three-server
// cluster, decentralized auth) and writes the trust.conf it includes: the
// operator the servers trust and their account resolver (pkg/creds), so
// that adding or removing a cluster, or any identity, needs no
// configuration edit. It writes a site's leaf node configuration
// (SiteConfig: the hub's operator and accounts, and its links to the
// hub), and the accounts of a configuration that lists its users
// (Accounts: one NKey user per identity, each with exactly the rights
// pkg/bus gives it, the clusters' identities in their own account as at
// the hub).
package nats

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
)

// Config is nats.conf.
//
//go:embed nats.conf
var Config []byte

// Identity is one NATS user.
type Identity struct {
	// NKey is the user's public NKey (U...).
	NKey string
	// Permissions are its rights; nil: every right (the operator's own
	// login, for administration; give it to no service).
	Permissions *bus.Permissions
}

// Authorization is the authorization block for ids as NATS's
// configuration reads it.
func Authorization(ids []Identity) (map[string]any, error) {
	if len(ids) == 0 {
		return nil, errors.New("nats users: no identity")
	}
	seen := map[string]bool{}
	users := make([]any, 0, len(ids))
	for _, id := range ids {
		if !nkeys.IsValidPublicUserKey(id.NKey) {
			return nil, fmt.Errorf("nats users: %q is not a public user NKey", id.NKey)
		}
		if seen[id.NKey] {
			return nil, fmt.Errorf("nats users: %s twice: each identity has its own key", id.NKey)
		}
		seen[id.NKey] = true
		u := map[string]any{"nkey": id.NKey}
		if p := id.Permissions; p != nil {
			perms := map[string]any{"publish": map[string]any{"allow": p.Publish}, "subscribe": map[string]any{"allow": p.Subscribe}}
			if len(p.Publish) == 0 {
				// An empty allow list would allow everything.
				perms["publish"] = map[string]any{"deny": []string{">"}}
			}
			if len(p.Subscribe) == 0 {
				perms["subscribe"] = map[string]any{"deny": []string{">"}}
			}
			if p.AllowResponses {
				perms["allow_responses"] = true
			}
			u["permissions"] = perms
		}
		users = append(users, u)
	}
	return map[string]any{"users": users}, nil
}

// Accounts is the accounts block of a configuration that lists its
// users, laid out as the hub's operator lays them (pkg/creds): services in
// the Flotilla account, which holds JetStream; agents in the clusters'
// account, which reaches it only through bus.ClusterImports.
func Accounts(services, clusters []Identity) (map[string]any, error) {
	svc, err := Authorization(services)
	if err != nil {
		return nil, err
	}
	cl, err := Authorization(clusters)
	if err != nil {
		return nil, err
	}
	for _, c := range clusters {
		for _, s := range services {
			if c.NKey == s.NKey {
				return nil, fmt.Errorf("nats accounts: %s is both a service's and a cluster's: each identity has its own key", c.NKey)
			}
		}
	}
	var exports, imports []any
	for _, imp := range bus.ClusterImports() {
		e := map[string]any{"service": imp.Subject}
		if imp.Stream {
			e["response_type"] = "stream"
		}
		exports = append(exports, e)
		i := map[string]any{"service": map[string]any{"account": creds.AccountName, "subject": imp.Subject}}
		if imp.To != "" {
			i["to"] = imp.To
		}
		imports = append(imports, i)
	}
	var back, answers []any
	for _, subj := range bus.ClusterExports() {
		back = append(back, map[string]any{"service": subj})
		answers = append(answers, map[string]any{"service": map[string]any{"account": creds.ClustersName, "subject": subj}})
	}
	return map[string]any{
		creds.AccountName:  map[string]any{"jetstream": "enabled", "users": svc["users"], "exports": exports, "imports": answers},
		creds.ClustersName: map[string]any{"users": cl["users"], "imports": imports, "exports": back},
	}, nil
}

// Site is a site's leaf node, as SiteConfig writes its configuration.
type Site struct {
	// Name is the site's JetStream domain.
	Name string
	// StoreDir holds its JetStream files, ResolverDir its accounts.
	StoreDir, ResolverDir string
	// HubURL is the hub's leaf node port (tls://, through the site's link).
	HubURL string
	// LinkCreds logs the Flotilla account's link in at the hub, into the
	// site's own account there (the site's leaf user,
	// bus.SiteLinkPermissions); SystemCreds the system
	// account's, with bus.SiteResolverPermissions: both from
	// creds.Authority.SiteLinks, good for a leaf node's link only.
	LinkCreds, SystemCreds string
	// CA verifies the hub's certificate ("" none: a plain link).
	CA string
	// LinkDeny are subjects the Flotilla link never carries either way.
	LinkDeny []string
}

// SyncAlways is the JetStream sync_interval of a server that is alone
// with its data (a site's leaf node, the dev hub): every write is flushed
// to disk before it is acknowledged, so that an acknowledged report or
// step survives a host crash (the default flushes every 2 minutes). On a
// three-node cluster with R3 streams a write is acknowledged once a
// quorum holds it, and the default is kept.
const SyncAlways = "always"

// SiteConfig is a site's leaf node configuration, but for where it
// listens and its own TLS: it trusts the hub's operator and holds the
// hub's accounts in a full resolver of its own (agents log in there with
// the credentials the hub signs, laid out in accounts as at the hub), and
// links to the hub twice: the Flotilla account (into the site's own
// account at the hub: bus/sites.go), and the system account,
// over which the hub's account updates (revocations) reach the site's
// resolver.
func SiteConfig(authority *creds.Authority, s Site) (map[string]any, error) {
	trust, err := authority.ServerConfig(s.ResolverDir)
	if err != nil {
		return nil, fmt.Errorf("site %s: %w", s.Name, err)
	}
	link := map[string]any{"url": s.HubURL, "credentials": s.LinkCreds, "account": authority.AccountKey()}
	sys := map[string]any{"url": s.HubURL, "credentials": s.SystemCreds, "account": authority.SystemKey()}
	if s.CA != "" {
		link["tls"] = map[string]any{"ca_file": s.CA}
		sys["tls"] = map[string]any{"ca_file": s.CA}
	}
	if len(s.LinkDeny) > 0 {
		link["deny_imports"], link["deny_exports"] = s.LinkDeny, s.LinkDeny
	}
	conf := map[string]any{
		"jetstream": map[string]any{"store_dir": s.StoreDir, "domain": s.Name, "sync_interval": SyncAlways},
		// Back within a tenth of a second of the link.
		"leafnodes": map[string]any{"reconnect": "100ms", "remotes": []any{link, sys}},
	}
	for k, v := range trust {
		conf[k] = v
	}
	return conf, nil
}

// Trust is trust.conf: the part of nats.conf that trusts authority's
// operator, with a full account resolver in resolverDir (a persistent
// volume: it keeps the revocations the dispatcher pushes).
func Trust(authority *creds.Authority, resolverDir string) ([]byte, error) {
	trust, err := authority.ServerConfig(resolverDir)
	if err != nil {
		return nil, fmt.Errorf("nats trust: %w", err)
	}
	data, err := Encode(trust)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(data))
	return []byte(strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}") + "\n"), nil
}

// Users is users.conf for ids: the file nats.conf includes.
func Users(ids []Identity) ([]byte, error) {
	auth, err := Authorization(ids)
	if err != nil {
		return nil, err
	}
	data, err := Encode(map[string]any{"authorization": auth})
	if err != nil {
		return nil, err
	}
	// An included file holds the block's contents, not an object.
	s := strings.TrimSpace(string(data))
	return []byte(strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}") + "\n"), nil
}

// Encode writes v as NATS's configuration reads it: JSON, with no \u
// escapes (its parser reads '>' as is, not escaped).
func Encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("nats config: %w", err)
	}
	return b.Bytes(), nil
}
