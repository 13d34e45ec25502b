package gate

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Headers of a signed approval over NATS.
const (
	HeaderKeyID     = "flotilla-key-id"
	HeaderSignature = "flotilla-signature"
)

// HTTP headers of the webhook (the public contract).
const (
	HTTPHeaderKeyID     = "X-Flotilla-Key-Id"
	HTTPHeaderTimestamp = "X-Flotilla-Timestamp"
	HTTPHeaderSignature = "X-Flotilla-Signature"
)

// MaxSkew is how far a signed decision's time may be from the clock that
// judges it: the gate's for a webhook call's timestamp, the stream's (when
// it stored the message) for a NATS approval's ce-time. An older signed
// decision sent again is stale.
const MaxSkew = 5 * time.Minute

// Identity is someone the gate trusts to decide.
type Identity struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups,omitempty"`
	// NKey is the public ed25519 key (U...) that signs approvals over NATS.
	NKey string `json:"nkey,omitempty"`
	// HMACSecret (or HMACSecretFile) signs webhook calls.
	HMACSecret     string `json:"hmacSecret,omitempty"`
	HMACSecretFile string `json:"hmacSecretFile,omitempty"`
	// Delegate marks a bot trusted to name the person who decided (the
	// event's approver); otherwise the approver is the identity itself.
	Delegate bool `json:"delegate,omitempty"`
	// Namespaces are the hub namespaces the identity may decide in ("*":
	// every one). Required: a bot is trusted somewhere, never by default.
	Namespaces []string `json:"namespaces"`
}

// Config is the gate's trust configuration.
type Config struct {
	Identities []Identity `json:"identities"`
}

// LoadConfig reads a YAML trust configuration.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gate config: %w", err)
	}
	cfg := &Config{}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("gate config %s: %w", path, err)
	}
	for i := range cfg.Identities {
		id := &cfg.Identities[i]
		if id.Name == "" {
			return nil, fmt.Errorf("gate config %s: identity %d has no name", path, i)
		}
		if id.HMACSecretFile != "" {
			secret, err := os.ReadFile(id.HMACSecretFile)
			if err != nil {
				return nil, fmt.Errorf("gate config %s: identity %s: %w", path, id.Name, err)
			}
			id.HMACSecret = strings.TrimSpace(string(secret))
		}
		if len(id.Namespaces) == 0 {
			return nil, fmt.Errorf("gate config %s: identity %s lists no namespaces it may decide in: give namespaces: [<ns>, ...] (or [\"*\"] for every one)", path, id.Name)
		}
		if id.NKey != "" && !nkeys.IsValidPublicUserKey(id.NKey) {
			return nil, fmt.Errorf("gate config %s: identity %s: nkey is not a public user key (U...)", path, id.Name)
		}
	}
	return cfg, nil
}

// trusted are the namespaces the identity may decide in: none unless listed.
func (id *Identity) trusted() []string {
	if id.Namespaces == nil {
		return []string{}
	}
	return id.Namespaces
}

func (c *Config) identity(name string) (*Identity, bool) {
	for i := range c.Identities {
		if c.Identities[i].Name == name {
			return &c.Identities[i], true
		}
	}
	return nil, false
}

// Errors of authentication.
var (
	ErrUnsigned     = errors.New("missing key id or signature")
	ErrUnknownKey   = errors.New("unknown key id")
	ErrBadSignature = errors.New("signature does not verify")
)

// natsSigningInput binds the signature to the event's ID and time, so a
// signed body cannot be replayed under another ID.
func natsSigningInput(id, ts string, body []byte) []byte {
	return []byte("v1:" + id + ":" + ts + ":" + string(body))
}

// SignNATS signs an encoded approval message with a user NKey: what a bot
// does before publishing on flotilla.approvals.<ns>.<app>.
func SignNATS(msg *nats.Msg, keyID string, kp nkeys.KeyPair) error {
	sig, err := kp.Sign(natsSigningInput(msg.Header.Get(events.HeaderID), msg.Header.Get(events.HeaderTime), msg.Data))
	if err != nil {
		return err
	}
	msg.Header.Set(HeaderKeyID, keyID)
	msg.Header.Set(HeaderSignature, "v1="+base64.RawURLEncoding.EncodeToString(sig))
	return nil
}

func (c *Config) verifyNATS(msg *nats.Msg) (*Identity, error) {
	keyID, sig := msg.Header.Get(HeaderKeyID), msg.Header.Get(HeaderSignature)
	if keyID == "" || sig == "" {
		return nil, ErrUnsigned
	}
	id, ok := c.identity(keyID)
	if !ok || id.NKey == "" {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(sig, "v1="))
	if err != nil || !strings.HasPrefix(sig, "v1=") {
		return nil, ErrBadSignature
	}
	kp, err := nkeys.FromPublicKey(id.NKey)
	if err != nil {
		return nil, ErrUnknownKey
	}
	if err := kp.Verify(natsSigningInput(msg.Header.Get(events.HeaderID), msg.Header.Get(events.HeaderTime), msg.Data), raw); err != nil {
		return nil, ErrBadSignature
	}
	return id, nil
}

// SignHTTP is the webhook signature:
// v2=<hex HMAC-SHA256(secret, "v2:" + timestamp + ":" + ce-id + ":" + body)>.
// It covers the event's ID, so a captured call cannot be replayed under a
// new ID (which would count as a new decision).
func SignHTTP(secret, timestamp, id string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v2:" + timestamp + ":" + id + ":"))
	mac.Write(body)
	return "v2=" + hex.EncodeToString(mac.Sum(nil))
}

// ErrOldSignature is a v1 webhook signature, which did not cover ce-id.
var ErrOldSignature = errors.New("a v1 signature does not cover ce-id and is no longer taken: sign v2 (\"v2:\" + timestamp + \":\" + ce-id + \":\" + body)")

func (c *Config) verifyHTTP(keyID, timestamp, id, signature string, body []byte) (*Identity, error) {
	if keyID == "" || signature == "" {
		return nil, ErrUnsigned
	}
	ident, ok := c.identity(keyID)
	if !ok || ident.HMACSecret == "" {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	if strings.HasPrefix(signature, "v1=") {
		return nil, ErrOldSignature
	}
	if !hmac.Equal([]byte(SignHTTP(ident.HMACSecret, timestamp, id, body)), []byte(signature)) {
		return nil, ErrBadSignature
	}
	return ident, nil
}
