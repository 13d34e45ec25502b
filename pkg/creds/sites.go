package creds

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Each air-gapped site has an account of its own at the hub, which its
// leaf node's link logs in to (bus/sites.go says why it may never be the
// services' account). Its identity key is kept beside the authority's
// others (site-<name>.nk); SitesSigning signs its users.

// siteStorage bounds a site's account's JetStream storage at the hub.
const siteStorage = 8 << 30

// siteName is a site's name: its JetStream domain, a subject token.
var siteName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// siteKeyFile is the seed file of a site's account's identity.
func siteKeyFile(name string) string { return "site-" + name + ".nk" }

// loadSites reads the sites' account keys kept in the authority's
// directory.
func (a *Authority) loadSites() error {
	files, err := filepath.Glob(filepath.Join(a.dir, "site-*.nk"))
	if err != nil {
		return err
	}
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "site-"), ".nk")
		if !siteName.MatchString(name) {
			continue
		}
		kp, err := Seed(f)
		if err != nil {
			return err
		}
		a.sites[name] = kp
	}
	return nil
}

// AddSite gives a site an account at the hub (kept: its key is made once).
// The site's and the services' account JWTs change with it: servers
// already running take them pushed (or preloaded on their next start).
func (a *Authority) AddSite(name string) error {
	if !siteName.MatchString(name) || bus.ReservedSiteName(name) {
		return fmt.Errorf("site %q: a site is named by its JetStream domain: letters, digits, '-' and '_', not %q, \"flotilla\" or SITE_…", name, bus.HubDomain)
	}
	if _, ok := a.sites[name]; ok {
		return nil
	}
	if a.dir == "" {
		return fmt.Errorf("site %s: the authority has no directory to keep its key in", name)
	}
	kp, err := KeyFile(filepath.Join(a.dir, siteKeyFile(name)), nkeys.CreateAccount)
	if err != nil {
		return fmt.Errorf("site %s: %w", name, err)
	}
	a.sites[name] = kp
	return nil
}

// Sites are the sites that have an account, by name.
func (a *Authority) Sites() []string {
	var out []string
	for name := range a.sites {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// SiteKey is a site's account's public key ("" for a site with none).
func (a *Authority) SiteKey(name string) string {
	kp, ok := a.sites[name]
	if !ok {
		return ""
	}
	return public(kp)
}

// SiteClaims are a site's account's claims: JetStream on (its outbox and
// inbox at the hub), what its outbox's sources need imported from the
// services' account and what the services' sources of its inbox need
// exported (bus.SiteImports, bus.SiteExports), and the sites' signing key.
func (a *Authority) SiteClaims(name string) (*jwt.AccountClaims, error) {
	kp, ok := a.sites[name]
	if !ok {
		return nil, fmt.Errorf("site %s: no account (AddSite)", name)
	}
	ac := jwt.NewAccountClaims(public(kp))
	ac.Name = bus.SiteAccount(name)
	// Its two streams and no more, in bounded storage (the boxes' own
	// limits, three replicas of each, with room to spare): nothing a site
	// sends, nor a user of the account, grows the hub's store past them.
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: siteStorage, DiskStorage: siteStorage,
		Streams: 2, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit}
	for _, imp := range bus.SiteImports(name) {
		i := &jwt.Import{Name: imp.Subject, Account: public(a.Account), Subject: jwt.Subject(imp.Subject), Type: jwt.Service}
		if imp.Feed {
			i.Type = jwt.Stream
		}
		if imp.To != "" {
			i.LocalSubject = jwt.RenamingSubject(imp.To)
		}
		ac.Imports.Add(i)
	}
	for _, exp := range bus.SiteExports(name) {
		e := &jwt.Export{Name: exp.Subject, Subject: jwt.Subject(exp.Subject), Type: jwt.Service}
		if exp.Feed {
			e.Type = jwt.Stream
		}
		ac.Exports.Add(e)
	}
	ac.SigningKeys.Add(public(a.SitesSigning))
	return ac, nil
}

// SiteJWT is a site's account's JWT.
func (a *Authority) SiteJWT(name string) (string, error) {
	ac, err := a.SiteClaims(name)
	if err != nil {
		return "", err
	}
	return ac.Encode(a.OperatorSigning)
}

// siteCrossings adds to the services' account's claims what crosses to
// and from each site's account: the exports its outbox's sources use, and
// the imports of what the services' sources of its inbox use.
func (a *Authority) siteCrossings(ac *jwt.AccountClaims) {
	exported := map[string]bool{}
	for _, e := range ac.Exports {
		exported[string(e.Subject)] = true
	}
	for _, name := range a.Sites() {
		for _, imp := range bus.SiteImports(name) {
			if exported[imp.Subject] {
				continue
			}
			exported[imp.Subject] = true
			e := &jwt.Export{Name: imp.Subject, Subject: jwt.Subject(imp.Subject), Type: jwt.Service}
			if imp.Feed {
				e.Type = jwt.Stream
			}
			ac.Exports.Add(e)
		}
		for _, exp := range bus.SiteExports(name) {
			i := &jwt.Import{Name: exp.Subject, Account: a.SiteKey(name), Subject: jwt.Subject(exp.Subject), Type: jwt.Service}
			if exp.Feed {
				i.Type = jwt.Stream
			}
			if exp.To != "" {
				i.LocalSubject = jwt.RenamingSubject(exp.To)
			}
			ac.Imports.Add(i)
		}
	}
}

// siteUser is a credentials file of a user of a site's account.
func (a *Authority) siteUser(site, name string, p bus.Permissions, leafOnly bool) ([]byte, error) {
	key := a.SiteKey(site)
	if key == "" {
		return nil, fmt.Errorf("site %s: no account (AddSite)", site)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = name
	uc.IssuerAccount = key
	if leafOnly {
		uc.AllowedConnectionTypes = jwt.StringList{jwt.ConnectionTypeLeafnode}
	}
	setPermissions(&uc.Permissions, p)
	return credsFile(uc, a.SitesSigning, kp)
}

// SiteDispatcher is the dispatcher's credentials file in a site's account
// (bus.SiteDispatcherPermissions): it keeps the site's outbox and inbox
// and, over the link, the site's streams.
func (a *Authority) SiteDispatcher(site string) ([]byte, error) {
	return a.siteUser(site, "dispatcher-"+site, bus.SiteDispatcherPermissions(site), false)
}
