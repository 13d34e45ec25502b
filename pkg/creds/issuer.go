package creds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"k8s.io/apimachinery/pkg/util/validation"
)

// requestTimeout bounds each request to the resolver.
const requestTimeout = 5 * time.Second

// Requester is the system-account connection an Issuer pushes accounts
// over.
type Requester interface {
	RequestWithContext(ctx context.Context, subj string, data []byte) (*nats.Msg, error)
}

// Issuer signs agents' user JWTs and revokes them: the dispatcher's part
// of the authority. It holds the agents' scoped signing key, which can sign
// nothing but agents bound to their own cluster, and the operator's
// signing key, used only to put revocations into the clusters' account.
type Issuer struct {
	agents, operator nkeys.KeyPair
	account          string
	sys              Requester
}

// NewIssuer is an issuer for account (its public key) over sys, a
// connection of a system-account user with IssuerPermissions.
func NewIssuer(agentSigning, operatorSigning nkeys.KeyPair, account string, sys Requester) (*Issuer, error) {
	if !nkeys.IsValidPublicAccountKey(account) {
		return nil, fmt.Errorf("nats issuer: %q is not an account's public key", account)
	}
	if _, err := agentSigning.Seed(); err != nil {
		return nil, fmt.Errorf("nats issuer: agents' signing key: %w", err)
	}
	if _, err := operatorSigning.Seed(); err != nil {
		return nil, fmt.Errorf("nats issuer: operator's signing key: %w", err)
	}
	return &Issuer{agents: agentSigning, operator: operatorSigning, account: account, sys: sys}, nil
}

// Account is the public key of the account the issuer signs for.
func (i *Issuer) Account() string { return i.account }

// Issue signs a user JWT for the agent of cluster that holds the private
// half of pub. Its rights are the agents' template for that name.
func (i *Issuer) Issue(cluster, pub string) (string, error) {
	if msgs := validation.IsDNS1123Label(cluster); len(msgs) > 0 {
		// The name is spliced into the agents' subjects: one token, no
		// wildcard, no dot.
		return "", fmt.Errorf("no credential for cluster %q: not a DNS-1123 label (%s)", cluster, strings.Join(msgs, "; "))
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("no credential for cluster %s: %q is not a user's public NKey", cluster, pub)
	}
	uc := jwt.NewUserClaims(pub)
	uc.Name = cluster
	uc.IssuerAccount = i.account
	// A scoped key's users carry no rights or limits: the scope's do.
	uc.UserPermissionLimits = jwt.UserPermissionLimits{}
	token, err := uc.Encode(i.agents)
	if err != nil {
		return "", fmt.Errorf("sign the credential of cluster %s: %w", cluster, err)
	}
	return token, nil
}

// IssueAfter is Issue once the clock is past after's second: a key revoked
// at after (a cluster accepted again with the key it had) gets a JWT the
// revocation does not cover, while every JWT issued for it before stays
// refused. A revocation is never lifted.
func (i *Issuer) IssueAfter(ctx context.Context, cluster, pub string, after time.Time) (string, error) {
	for time.Now().Unix() <= after.Unix() {
		wait := time.Until(time.Unix(after.Unix()+1, 0))
		if wait > 5*time.Second {
			return "", fmt.Errorf("no credential for cluster %s: its key was revoked at %s, later than this clock (%s)", cluster, after.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
	}
	return i.Issue(cluster, pub)
}

// Revoke makes the servers refuse pub's JWTs issued up to at (and close
// their connections): a revocation in the account's JWT, pushed to the
// resolver, and read back until it holds (another replica's concurrent
// push may have replaced this one's).
func (i *Issuer) Revoke(ctx context.Context, pub string, at time.Time) error {
	return i.RevokeAll(ctx, map[string]time.Time{pub: at})
}

// RevokeAll makes sure every key in revoked is revoked at least up to its
// time, in one push: also the dispatcher's reconcile, which puts back
// revocations an account JWT installed anew (a re-rendered preload) or a
// lost push dropped, with their own times (a JWT issued since stays good).
func (i *Issuer) RevokeAll(ctx context.Context, revoked map[string]time.Time) error {
	for pub := range revoked {
		if !nkeys.IsValidPublicUserKey(pub) {
			return fmt.Errorf("revoke %q: not a user's public NKey", pub)
		}
	}
	missing := func(ac *jwt.AccountClaims) []string {
		var out []string
		for pub, at := range revoked {
			if t, ok := ac.Revocations[pub]; !ok || t < at.Unix() {
				out = append(out, pub)
			}
		}
		return out
	}
	return i.edit(ctx, fmt.Sprintf("revocation of %d keys", len(revoked)), func(ac *jwt.AccountClaims) bool {
		m := missing(ac)
		for _, pub := range m {
			ac.RevokeAt(pub, revoked[pub])
		}
		return len(m) > 0
	}, func(ac *jwt.AccountClaims) bool { return len(missing(ac)) == 0 })
}

// edit changes the account's JWT with edit until holds says it holds.
func (i *Issuer) edit(ctx context.Context, what string, edit, holds func(*jwt.AccountClaims) bool) error {
	for attempt := 0; ; attempt++ {
		ac, err := i.lookup(ctx)
		if err != nil {
			return err
		}
		if holds(ac) {
			return nil
		}
		if attempt == 5 {
			return fmt.Errorf("%s in account %s: replaced by other writers 5 times", what, i.account)
		}
		if edit(ac) {
			if err := i.push(ctx, ac); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
}

// ClaimsLookupSubject and ClaimsUpdateSubject are where the resolver
// reads and takes one account's JWT (the update is refused for any other
// account's).
func ClaimsLookupSubject(account string) string {
	return "$SYS.REQ.ACCOUNT." + account + ".CLAIMS.LOOKUP"
}
func ClaimsUpdateSubject(account string) string {
	return "$SYS.REQ.ACCOUNT." + account + ".CLAIMS.UPDATE"
}

// lookup reads the account's JWT as the resolver holds it.
func (i *Issuer) lookup(ctx context.Context) (*jwt.AccountClaims, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg, err := i.sys.RequestWithContext(ctx, ClaimsLookupSubject(i.account), nil)
	if err != nil {
		return nil, fmt.Errorf("read account %s's JWT: %w", i.account, err)
	}
	if len(msg.Data) == 0 {
		return nil, fmt.Errorf("read account %s's JWT: the resolver holds none", i.account)
	}
	ac, err := jwt.DecodeAccountClaims(string(msg.Data))
	if err != nil {
		return nil, fmt.Errorf("read account %s's JWT: %w", i.account, err)
	}
	if ac.Subject != i.account {
		return nil, fmt.Errorf("read account %s's JWT: the resolver answered for %s", i.account, ac.Subject)
	}
	return ac, nil
}

// push sends the account's JWT, re-signed, to the resolver.
func (i *Issuer) push(ctx context.Context, ac *jwt.AccountClaims) error {
	token, err := ac.Encode(i.operator)
	if err != nil {
		return fmt.Errorf("sign account %s: %w", i.account, err)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg, err := i.sys.RequestWithContext(ctx, ClaimsUpdateSubject(i.account), []byte(token))
	if err != nil {
		return fmt.Errorf("push account %s: %w", i.account, err)
	}
	var answer struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &answer); err != nil {
		return fmt.Errorf("push account %s: answer %q: %w", i.account, msg.Data, err)
	}
	if answer.Error != nil {
		return fmt.Errorf("push account %s: %d %s", i.account, answer.Error.Code, answer.Error.Description)
	}
	return nil
}

// CheckCredential says whether token is a credential for cluster's agent
// holding pub: an agent takes only its own.
func CheckCredential(token, cluster, pub string) error {
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return fmt.Errorf("credential of cluster %s: %w", cluster, err)
	}
	switch {
	case uc.Subject != pub:
		return fmt.Errorf("credential of cluster %s is for key %s, not this agent's %s", cluster, uc.Subject, pub)
	case uc.Name != cluster:
		return fmt.Errorf("credential for key %s names cluster %q, not %s", pub, uc.Name, cluster)
	case uc.Expires > 0 && time.Unix(uc.Expires, 0).Before(time.Now()):
		return fmt.Errorf("credential of cluster %s expired at %s", cluster, time.Unix(uc.Expires, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// Join proofs: a join carries the agent's public key and its signature
// over the join, so a holder of the shared bootstrap credential cannot
// speak for a cluster registered with another key.
func joinPayload(cluster, pub, id string) []byte {
	return []byte("flotilla-join\x00" + cluster + "\x00" + pub + "\x00" + id)
}

// SignJoin is the proof for the join id of cluster by kp.
func SignJoin(kp nkeys.KeyPair, cluster, id string) (pub, proof string, err error) {
	if pub, err = kp.PublicKey(); err != nil {
		return "", "", err
	}
	sig, err := kp.Sign(joinPayload(cluster, pub, id))
	if err != nil {
		return "", "", err
	}
	return pub, encodeSig(sig), nil
}

// VerifyJoin checks a join's proof.
func VerifyJoin(cluster, pub, id, proof string) error {
	if !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("join of cluster %s: %q is not a user's public NKey", cluster, pub)
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("join of cluster %s: %w", cluster, err)
	}
	sig, err := decodeSig(proof)
	if err != nil {
		return fmt.Errorf("join of cluster %s: proof: %w", cluster, err)
	}
	if err := kp.Verify(joinPayload(cluster, pub, id), sig); err != nil {
		return errors.New("join of cluster " + cluster + ": the proof is not signed by the key it names")
	}
	return nil
}
