// Package seal owns the hub's seal on work: the dispatcher signs every
// work message with the hub's work key (ed25519, an NKey), and an agent
// given the key's public half applies only work that carries a valid seal
// for the very subject, event and bytes it read. So work reaches a cluster
// only from the hub, whatever carried it: the hub's NATS, a site's leaf
// node, or a file carried by hand.
package seal

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Header carries the seal: "v1.<public key>.<signature>" (base64url).
const Header = "flotilla-seal"

// ErrUnsealed: the work carries no seal.
var ErrUnsealed = errors.New("the work carries no seal of the hub")

// ErrBadSeal: the seal is malformed, by another key, or for other bytes.
var ErrBadSeal = errors.New("the work's seal is not the hub's")

// input is what a seal covers: the NATS subject (whose cluster and
// application the work is for), the event's type, ID and time, and its
// data exactly as sent.
func input(subject string, h nats.Header, data []byte) []byte {
	var b strings.Builder
	for _, s := range []string{"flotilla-seal-v1", subject, h.Get(events.HeaderType), h.Get(events.HeaderID), h.Get(events.HeaderTime)} {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	b.Write(data)
	return []byte(b.String())
}

// Sealer seals work with the hub's work key.
type Sealer struct{ kp nkeys.KeyPair }

// NewSealer returns a sealer of the key whose seed is seed.
func NewSealer(seed []byte) (*Sealer, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("work key: %w", err)
	}
	return &Sealer{kp: kp}, nil
}

// LoadSealer reads the key's seed from path.
func LoadSealer(path string) (*Sealer, error) {
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("work key: %w", err)
	}
	return NewSealer([]byte(strings.TrimSpace(string(seed))))
}

// PublicKey is the key agents are given to verify with.
func (s *Sealer) PublicKey() (string, error) { return s.kp.PublicKey() }

// Seal signs msg (an encoded event, on its subject) in place.
func (s *Sealer) Seal(msg *nats.Msg) error {
	pub, err := s.kp.PublicKey()
	if err != nil {
		return err
	}
	sig, err := s.kp.Sign(input(msg.Subject, msg.Header, msg.Data))
	if err != nil {
		return fmt.Errorf("seal work: %w", err)
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(Header, "v1."+pub+"."+base64.RawURLEncoding.EncodeToString(sig))
	return nil
}

// Verifier checks seals against the hub's public work keys (more than one
// while a key is rotated).
type Verifier struct{ keys map[string]nkeys.KeyPair }

// NewVerifier trusts the public keys given.
func NewVerifier(public ...string) (*Verifier, error) {
	v := &Verifier{keys: map[string]nkeys.KeyPair{}}
	for _, p := range public {
		p = strings.TrimSpace(p)
		kp, err := nkeys.FromPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("hub work key %q: %w", p, err)
		}
		v.keys[p] = kp
	}
	if len(v.keys) == 0 {
		return nil, errors.New("no hub work key to verify with")
	}
	return v, nil
}

// Verify checks the seal of a message read from subject, with headers h
// and data as stored.
func (v *Verifier) Verify(subject string, h nats.Header, data []byte) error {
	value := h.Get(Header)
	if value == "" {
		return ErrUnsealed
	}
	version, rest, ok := strings.Cut(value, ".")
	pub, sig64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || version != "v1" {
		return fmt.Errorf("%w: malformed", ErrBadSeal)
	}
	kp, trusted := v.keys[pub]
	if !trusted {
		return fmt.Errorf("%w: sealed by key %.12s…, which this agent does not trust", ErrBadSeal, pub)
	}
	// Strict: one spelling of a signature, not sixteen.
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sig64)
	if err != nil {
		return fmt.Errorf("%w: malformed signature", ErrBadSeal)
	}
	if err := kp.Verify(input(subject, h, data), sig); err != nil {
		return fmt.Errorf("%w: it does not match the work (changed, or for another cluster or application)", ErrBadSeal)
	}
	return nil
}
