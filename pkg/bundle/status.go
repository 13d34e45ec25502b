package bundle

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nkeys"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// StatusKind names a status bundle: what a cluster's agent at a site with
// no link says back — its newest report per application and a heartbeat
// — signed with the agent's own key, which the hub registered when the
// cluster joined. Imported at the hub, its reports count as if the agent
// had sent them over NATS: the signature, not the subject, says who wrote
// them, so whoever carries or imports the file can alter or forge none.
const StatusKind = "StatusBundle"

// MaxStatusSize is the largest status bundle: it travels to the hub as one
// NATS message.
const MaxStatusSize = events.MaxStatusBundle

// Status is a status bundle.
type Status struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Cluster    string    `json:"cluster"`
	WrittenAt  time.Time `json:"writtenAt"`
	// NKey is the agent's public key; Signature its ed25519 signature
	// (base64url) over the cluster, WrittenAt and Digest.
	NKey      string    `json:"nkey"`
	Signature string    `json:"signature"`
	Digest    string    `json:"digest"`
	Messages  []Message `json:"messages"`
}

func statusPayload(s *Status) []byte {
	return []byte("flotilla-status-bundle\x00" + s.Cluster + "\x00" + s.WrittenAt.UTC().Format(time.RFC3339Nano) + "\x00" + s.Digest)
}

// NewStatus is a status bundle of cluster's msgs (its reports and
// heartbeat, each as the agent would publish it), signed with kp.
func NewStatus(cluster string, kp nkeys.KeyPair, at time.Time, msgs []Message) (*Status, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	s := &Status{APIVersion: APIVersion, Kind: StatusKind, Cluster: cluster, WrittenAt: at.UTC(), NKey: pub, Messages: msgs}
	if s.Digest, err = digest(msgs); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	sig, err := kp.Sign(statusPayload(s))
	if err != nil {
		return nil, fmt.Errorf("sign status bundle: %w", err)
	}
	s.Signature = base64.RawURLEncoding.EncodeToString(sig)
	return s, nil
}

// Encode writes the status bundle.
func (s *Status) Encode(w io.Writer) error {
	if err := json.NewEncoder(w).Encode(s); err != nil {
		return fmt.Errorf("write status bundle: %w", err)
	}
	return nil
}

// DecodeStatus reads a status bundle, checking its form, digest and
// signature by the key it names; Verify says whether that key is the
// cluster's.
func DecodeStatus(data []byte) (*Status, error) {
	if len(data) > MaxStatusSize {
		return nil, fmt.Errorf("status bundle of %d KiB: at most %d KiB travel to the hub", len(data)>>10, MaxStatusSize>>10)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	s := &Status{}
	if err := dec.Decode(s); err != nil {
		return nil, fmt.Errorf("not a status bundle: %w", err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	want, err := digest(s.Messages)
	if err != nil {
		return nil, err
	}
	if s.Digest != want {
		return nil, fmt.Errorf("status bundle of cluster %s is damaged or altered: its digest is %s, its messages' %s", s.Cluster, s.Digest, want)
	}
	kp, err := nkeys.FromPublicKey(s.NKey)
	if err != nil || !nkeys.IsValidPublicUserKey(s.NKey) {
		return nil, fmt.Errorf("status bundle of cluster %s: %q is not an agent's key", s.Cluster, s.NKey)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s.Signature)
	if err != nil || kp.Verify(statusPayload(s), sig) != nil {
		return nil, fmt.Errorf("status bundle of cluster %s is damaged or altered: its signature is not by the key it names", s.Cluster)
	}
	return s, nil
}

// Verify says whether the bundle is signed by registered, the key the
// cluster joined the hub with.
func (s *Status) Verify(registered string) error {
	if registered == "" {
		return fmt.Errorf("status bundle of cluster %s: the hub knows no key of the cluster (it never joined this hub)", s.Cluster)
	}
	if s.NKey != registered {
		return fmt.Errorf("status bundle of cluster %s is signed with key %s, not the cluster's %s", s.Cluster, s.NKey, registered)
	}
	return nil
}

func (s *Status) validate() error {
	var errs []error
	if s.APIVersion != APIVersion || s.Kind != StatusKind {
		errs = append(errs, fmt.Errorf("apiVersion %q kind %q: want %s %s", s.APIVersion, s.Kind, APIVersion, StatusKind))
	}
	if msgs := validation.IsDNS1123Label(s.Cluster); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("cluster %q: %v", s.Cluster, msgs))
	}
	if len(s.Messages) == 0 {
		errs = append(errs, errors.New("nothing in the status bundle"))
	}
	if len(s.Messages) > MaxMessages {
		errs = append(errs, fmt.Errorf("%d messages: at most %d", len(s.Messages), MaxMessages))
	}
	for i, m := range s.Messages {
		if !bus.SubjectMatches(bus.StatusFilter(s.Cluster), m.Subject) && m.Subject != bus.ClusterSubject(s.Cluster, "heartbeat") {
			errs = append(errs, fmt.Errorf("message %d is on %q, not a report or heartbeat of cluster %s", i, m.Subject, s.Cluster))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("not a valid status bundle: %w", errors.Join(errs...))
	}
	return nil
}

// Admit opens the status bundle an imported event carries: it arrived on
// its cluster's bundle subject, it decodes, it is the cluster's the event
// names, and it is signed with keyOf(cluster), the key the cluster joined
// with. Every error but keyOf's is final (the event will never count).
func Admit(ctx context.Context, e *events.Event, keyOf func(ctx context.Context, cluster string) (string, error)) (*Status, error) {
	d, ok := e.Data.(*events.StatusBundleData)
	if !ok {
		return nil, bus.Terminate(fmt.Errorf("%s is not a status bundle", e.Type))
	}
	if want := bus.StatusBundleSubject(d.Cluster); e.Topic != want {
		return nil, bus.Terminate(fmt.Errorf("status bundle of %s arrived on %s, not %s", d.Cluster, e.Topic, want))
	}
	s, err := DecodeStatus(d.Bundle)
	if err != nil {
		return nil, bus.Terminate(err)
	}
	if s.Cluster != d.Cluster {
		return nil, bus.Terminate(fmt.Errorf("status bundle of cluster %s imported as %s's", s.Cluster, d.Cluster))
	}
	key, err := keyOf(ctx, s.Cluster)
	if err != nil {
		return nil, err
	}
	if err := s.Verify(key); err != nil {
		return nil, bus.Terminate(err)
	}
	return s, nil
}
