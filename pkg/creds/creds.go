// Package creds owns Flotilla's NATS identities under decentralized auth:
// the operator, its system account, the Flotilla account that holds the
// hub's state and its services' users, the clusters' account that holds
// nothing and whose users run in managed clusters (with one scoped signing
// key per kind of user whose rights a template fixes: agents, joining
// agents), the bots' account, each air-gapped site's account (its link's
// and the dispatcher's users there), and the user JWTs those keys sign.
//
// A cluster's agent makes its own key pair; it joins with a bootstrap
// credential that can only ask to join and read what the hub answers. When
// the cluster is accepted the hub signs a user JWT for the agent's public
// key with the agents' scoped key, whose template binds the user to its
// own cluster's subjects ({{name()}} is the cluster); when the cluster is
// no longer accepted the hub revokes that key's JWTs in the clusters'
// account JWT (never lifted: a cluster accepted again gets a newer JWT)
// and pushes the account to the servers. No server restart or configuration
// edit adds or removes a cluster.
package creds

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Names of the account and roles, as the JWTs carry them.
const (
	AccountName   = "FLOTILLA"
	ClustersName  = "CLUSTERS"
	BotsName      = "BOTS"
	SystemName    = "SYS"
	RoleAgent     = "agent"
	RoleBootstrap = "bootstrap"
)

// MaxControlLine is the longest protocol line a server trusting an
// authority must take: a login carries the user's JWT, and a service's
// JWT lists its rights (the dispatcher's is past the default 4 KiB).
const MaxControlLine = 32 << 10

// Authority holds the keys that make Flotilla's NATS identities. Whoever
// installs the hub holds all of them; a service is given only the keys its
// part needs (the dispatcher: the agents' signing key and the operator's
// signing key, to issue and revoke agents).
type Authority struct {
	// Operator signs the operator JWT only. Strict: accounts are signed by
	// the operator's signing key, users by their account's signing keys,
	// so no identity key needs to be online.
	Operator nkeys.KeyPair
	// OperatorSigning signs the account JWTs, and so their revocations.
	OperatorSigning nkeys.KeyPair
	// System is the system account (the resolver's updates, monitoring);
	// SystemSigning signs its users (strict: no identity key signs users).
	System, SystemSigning nkeys.KeyPair
	// Account is the Flotilla account's identity.
	Account nkeys.KeyPair
	// AccountSigning signs users whose rights the JWT itself lists (the
	// hub's services, the operator's own login).
	AccountSigning nkeys.KeyPair
	// Clusters is the clusters' account's identity: agents and joining
	// agents, who reach the Flotilla account only through its imports
	// (bus.ClusterImports), so that no answer they ask for lands there.
	Clusters nkeys.KeyPair
	// AgentSigning signs agents' users: scoped, the template gives the rights.
	AgentSigning nkeys.KeyPair
	// BootstrapSigning signs bootstrap users: scoped to asking to join.
	BootstrapSigning nkeys.KeyPair
	// Bots is the chat bots' account's identity (bus.BotImports);
	// BotsSigning signs its users, whose JWTs name their namespaces.
	Bots, BotsSigning nkeys.KeyPair
	// SitesSigning signs the users of every site's account (its leaf
	// node's link, the dispatcher's login there).
	SitesSigning nkeys.KeyPair

	// dir holds the seeds; sites are the sites' accounts' identities by
	// site name (AddSite).
	dir   string
	sites map[string]nkeys.KeyPair
}

// keyFiles names each key's seed file in an authority's directory.
func (a *Authority) keyFiles() []struct {
	file   string
	kp     *nkeys.KeyPair
	create func() (nkeys.KeyPair, error)
} {
	return []struct {
		file   string
		kp     *nkeys.KeyPair
		create func() (nkeys.KeyPair, error)
	}{
		{"operator.nk", &a.Operator, nkeys.CreateOperator},
		{"operator-signing.nk", &a.OperatorSigning, nkeys.CreateOperator},
		{"system.nk", &a.System, nkeys.CreateAccount},
		{"system-signing.nk", &a.SystemSigning, nkeys.CreateAccount},
		{"account.nk", &a.Account, nkeys.CreateAccount},
		{"account-signing.nk", &a.AccountSigning, nkeys.CreateAccount},
		{"clusters.nk", &a.Clusters, nkeys.CreateAccount},
		{"agent-signing.nk", &a.AgentSigning, nkeys.CreateAccount},
		{"bootstrap-signing.nk", &a.BootstrapSigning, nkeys.CreateAccount},
		{"bots.nk", &a.Bots, nkeys.CreateAccount},
		{"bots-signing.nk", &a.BotsSigning, nkeys.CreateAccount},
		{"sites-signing.nk", &a.SitesSigning, nkeys.CreateAccount},
	}
}

// LoadOrCreate reads an authority's seeds from dir, making any missing.
func LoadOrCreate(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats authority: %w", err)
	}
	a := &Authority{dir: dir, sites: map[string]nkeys.KeyPair{}}
	for _, k := range a.keyFiles() {
		kp, err := KeyFile(filepath.Join(dir, k.file), k.create)
		if err != nil {
			return nil, fmt.Errorf("nats authority: %w", err)
		}
		*k.kp = kp
	}
	if err := a.loadSites(); err != nil {
		return nil, fmt.Errorf("nats authority: %w", err)
	}
	return a, nil
}

// KeyFile reads the seed in path, or makes one with create and writes it
// there (0600) first.
func KeyFile(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := create()
		if err != nil {
			return nil, err
		}
		if seed, err = kp.Seed(); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("write key %s: %w", path, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(seed)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return kp, nil
}

// Seed reads the seed file at path (a bare seed or a decorated one, as in
// a .creds file).
func Seed(path string) (nkeys.KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return kp, nil
}

func public(kp nkeys.KeyPair) string {
	pub, _ := kp.PublicKey()
	return pub
}

// OperatorJWT is the operator's JWT, which the servers trust.
func (a *Authority) OperatorJWT() (string, error) {
	oc := jwt.NewOperatorClaims(public(a.Operator))
	oc.Name = "flotilla"
	oc.SigningKeys.Add(public(a.OperatorSigning))
	oc.SystemAccount = public(a.System)
	oc.StrictSigningKeyUsage = true
	return oc.Encode(a.Operator)
}

// SystemJWT is the system account's JWT.
func (a *Authority) SystemJWT() (string, error) {
	ac := jwt.NewAccountClaims(public(a.System))
	ac.Name = SystemName
	ac.SigningKeys.Add(public(a.SystemSigning))
	return ac.Encode(a.OperatorSigning)
}

// AccountClaims are the Flotilla account's claims: JetStream on, its
// signing key, the services it exports to the clusters' account and the
// live reads it imports from it.
func (a *Authority) AccountClaims() *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(public(a.Account))
	ac.Name = AccountName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit}
	ac.SigningKeys.Add(public(a.AccountSigning))
	for _, imp := range bus.ClusterImports() {
		e := &jwt.Export{Name: imp.Subject, Subject: jwt.Subject(imp.Subject), Type: jwt.Service}
		if imp.Stream {
			e.ResponseType = jwt.ResponseTypeStream
		}
		ac.Exports.Add(e)
	}
	for _, subj := range bus.ClusterExports() {
		ac.Imports.Add(&jwt.Import{Name: subj, Account: public(a.Clusters), Subject: jwt.Subject(subj), Type: jwt.Service})
	}
	for _, imp := range bus.BotImports() {
		e := &jwt.Export{Name: imp.Subject, Subject: jwt.Subject(imp.Subject), Type: jwt.Service}
		if imp.Feed {
			e.Type = jwt.Stream
		}
		ac.Exports.Add(e)
	}
	a.siteCrossings(ac)
	return ac
}

// BotsJWT is the bots' account's JWT: no JetStream, approvals and their
// requests imported.
func (a *Authority) BotsJWT() (string, error) {
	ac := jwt.NewAccountClaims(public(a.Bots))
	ac.Name = BotsName
	for _, imp := range bus.BotImports() {
		i := &jwt.Import{Name: imp.Subject, Account: public(a.Account), Subject: jwt.Subject(imp.Subject), Type: jwt.Service}
		if imp.Feed {
			i.Type = jwt.Stream
		}
		ac.Imports.Add(i)
	}
	ac.SigningKeys.Add(public(a.BotsSigning))
	return ac.Encode(a.OperatorSigning)
}

// AccountJWT is the Flotilla account's JWT.
func (a *Authority) AccountJWT() (string, error) {
	return a.AccountClaims().Encode(a.OperatorSigning)
}

// ClustersClaims are the clusters' account's claims, with no revocation:
// no JetStream, the Flotilla account's services imported, its live reads
// exported, and its scoped signing keys.
func (a *Authority) ClustersClaims() *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(public(a.Clusters))
	ac.Name = ClustersName
	for _, imp := range bus.ClusterImports() {
		i := &jwt.Import{Name: imp.Subject, Account: public(a.Account), Subject: jwt.Subject(imp.Subject), Type: jwt.Service}
		if imp.To != "" {
			i.LocalSubject = jwt.RenamingSubject(imp.To)
		}
		ac.Imports.Add(i)
	}
	for _, subj := range bus.ClusterExports() {
		ac.Exports.Add(&jwt.Export{Name: subj, Subject: jwt.Subject(subj), Type: jwt.Service})
	}
	ac.SigningKeys.AddScopedSigner(AgentScope(public(a.AgentSigning)))
	ac.SigningKeys.AddScopedSigner(BootstrapScope(public(a.BootstrapSigning)))
	return ac
}

// ClustersJWT is the clusters' account's JWT as first installed.
func (a *Authority) ClustersJWT() (string, error) {
	return a.ClustersClaims().Encode(a.OperatorSigning)
}

// AgentScope is the agents' scoped signing key: every agent's rights are
// bus.AgentPermissions of the cluster its user is named for. Names are
// DNS-1123 labels (the issuer refuses others), so {{name()}} expands to one
// subject token, as bus's own naming would.
func AgentScope(key string) *jwt.UserScope {
	s := jwt.NewUserScope()
	s.Key = key
	s.Role = RoleAgent
	s.Description = "a cluster's agent: its own cluster's subjects only"
	setPermissions(&s.Template.Permissions, bus.AgentPermissions("{{name()}}"))
	return s
}

// BootstrapScope is the joining agents' scoped signing key.
func BootstrapScope(key string) *jwt.UserScope {
	s := jwt.NewUserScope()
	s.Key = key
	s.Role = RoleBootstrap
	s.Description = "a cluster asking to join: its join, and the hub's answer"
	setPermissions(&s.Template.Permissions, bus.BootstrapPermissions())
	return s
}

// setPermissions writes p as a JWT's permissions. An empty list denies
// all (an empty allow list would allow everything).
func setPermissions(to *jwt.Permissions, p bus.Permissions) {
	to.Pub = jwt.Permission{Allow: append(jwt.StringList(nil), p.Publish...)}
	to.Sub = jwt.Permission{Allow: append(jwt.StringList(nil), p.Subscribe...)}
	if len(p.Publish) == 0 {
		to.Pub = jwt.Permission{Deny: jwt.StringList{">"}}
	}
	if len(p.Subscribe) == 0 {
		to.Sub = jwt.Permission{Deny: jwt.StringList{">"}}
	}
	if p.AllowResponses {
		// As the server's allow_responses: one answer per request.
		to.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}
	}
}

// User is a user's credentials file (JWT and seed) signed by the account's
// signing key, with rights p (nil: every right in the account: the
// operator's own login, for administration; give it to no service).
func (a *Authority) User(name string, p *bus.Permissions) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	return a.UserFor(name, kp, p)
}

// UserFor is User for an existing key pair.
func (a *Authority) UserFor(name string, kp nkeys.KeyPair, p *bus.Permissions) ([]byte, error) {
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = name
	uc.IssuerAccount = public(a.Account)
	if p != nil {
		setPermissions(&uc.Permissions, *p)
	}
	return credsFile(uc, a.AccountSigning, kp)
}

// SiteLinks are the credentials files of a site's leaf node's two links
// to the hub, each good only for a leaf node's link (no client may log in
// with it): in the site's own account (AddSite first), with
// bus.SiteLinkPermissions (the site's outbox and inbox and nothing else),
// and in the system account, with bus.SiteResolverPermissions (account
// updates to the site's resolver). Neither names a cluster: clusters join
// and leave a site with no credential issued again.
func (a *Authority) SiteLinks(site string) (link, system []byte, err error) {
	if link, err = a.siteUser(site, "leaf-"+site, bus.SiteLinkPermissions(site), true); err != nil {
		return nil, nil, fmt.Errorf("site %s: link: %w", site, err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, err
	}
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = "leaf-" + site + "-sys"
	uc.IssuerAccount = public(a.System)
	uc.AllowedConnectionTypes = jwt.StringList{jwt.ConnectionTypeLeafnode}
	setPermissions(&uc.Permissions, bus.SiteResolverPermissions())
	if system, err = credsFile(uc, a.SystemSigning, kp); err != nil {
		return nil, nil, fmt.Errorf("site %s: system link: %w", site, err)
	}
	return link, system, nil
}

// Bot is a chat bot's credentials file, in the bots' account, for its own
// key pair (which also signs its approvals) and with rights p
// (bus.BotPermissions of its namespaces).
func (a *Authority) Bot(name string, kp nkeys.KeyPair, p bus.Permissions) ([]byte, error) {
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = name
	uc.IssuerAccount = public(a.Bots)
	setPermissions(&uc.Permissions, p)
	return credsFile(uc, a.BotsSigning, kp)
}

// Bootstrap is a bootstrap credential: it may ask to join, as any cluster,
// and nothing else. Zero ttl: it does not expire.
func (a *Authority) Bootstrap(name string, ttl time.Duration) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = name
	uc.IssuerAccount = public(a.Clusters)
	uc.UserPermissionLimits = jwt.UserPermissionLimits{} // the scope's
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	return credsFile(uc, a.BootstrapSigning, kp)
}

// SystemUser is a user of the system account with rights p.
func (a *Authority) SystemUser(name string, p bus.Permissions) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(public(kp))
	uc.Name = name
	uc.IssuerAccount = public(a.System)
	setPermissions(&uc.Permissions, p)
	return credsFile(uc, a.SystemSigning, kp)
}

func credsFile(uc *jwt.UserClaims, signer, user nkeys.KeyPair) ([]byte, error) {
	token, err := uc.Encode(signer)
	if err != nil {
		return nil, fmt.Errorf("sign user %s: %w", uc.Name, err)
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}

// ServerConfig is the part of a NATS server's configuration that trusts
// this authority: the operator, the system account, and a full account
// resolver in dir (which takes pushed updates: revocations) preloaded with
// every account.
func (a *Authority) ServerConfig(dir string) (map[string]any, error) {
	op, sys, accounts, err := a.Trust()
	if err != nil {
		return nil, err
	}
	preload := map[string]any{}
	for k, v := range accounts {
		preload[k] = v
	}
	return map[string]any{
		"max_control_line": MaxControlLine,
		"operator":         op,
		"system_account":   sys,
		"resolver":         map[string]any{"type": "full", "dir": dir, "allow_delete": false, "interval": "2m", "timeout": "1.9s"},
		"resolver_preload": preload,
	}, nil
}

// WriteFile writes data to path (0600), making its directory.
func WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// UserJWT reads the user JWT of a credentials file (or a bare JWT).
func UserJWT(data []byte) (string, error) {
	s := strings.TrimSpace(string(data))
	if !strings.Contains(s, "-----BEGIN") {
		return s, nil
	}
	return jwt.ParseDecoratedJWT(data)
}

func encodeSig(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }

func decodeSig(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

// Trust is what a server trusts from this authority: the operator's JWT,
// the system account's public key, and the accounts' JWTs by public key.
func (a *Authority) Trust() (operator, system string, accounts map[string]string, err error) {
	if operator, err = a.OperatorJWT(); err != nil {
		return "", "", nil, err
	}
	sys, err := a.SystemJWT()
	if err != nil {
		return "", "", nil, err
	}
	acc, err := a.AccountJWT()
	if err != nil {
		return "", "", nil, err
	}
	clusters, err := a.ClustersJWT()
	if err != nil {
		return "", "", nil, err
	}
	bots, err := a.BotsJWT()
	if err != nil {
		return "", "", nil, err
	}
	accounts = map[string]string{public(a.System): sys, public(a.Account): acc, public(a.Clusters): clusters, public(a.Bots): bots}
	for _, name := range a.Sites() {
		token, err := a.SiteJWT(name)
		if err != nil {
			return "", "", nil, err
		}
		accounts[a.SiteKey(name)] = token
	}
	return operator, public(a.System), accounts, nil
}

// SystemKey is the system account's public key.
func (a *Authority) SystemKey() string { return public(a.System) }

// AccountKey is the Flotilla account's public key.
func (a *Authority) AccountKey() string { return public(a.Account) }

// ClustersKey is the clusters' account's public key: the one the
// dispatcher's issuer signs agents for and revokes them in.
func (a *Authority) ClustersKey() string { return public(a.Clusters) }
