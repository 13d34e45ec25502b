// Package bundle owns work bundles: the hub's sealed work for one cluster,
// written to one file that is carried by hand to a site with no link to
// the hub, where the cluster's agent applies it as if it had arrived over
// NATS.
//
// A bundle adds no trust of its own: each message in it is exactly as the
// dispatcher sealed it on the work stream (pkg/seal signs its subject, its
// event's type, ID and time and its data with the hub's work key), so the
// agent verifies each as it verifies work from NATS, and applies nothing
// the hub did not send to that cluster, nothing older than what it has.
// The file's digest only catches a file cut short or damaged in transit
// before anything in it is read.
package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// APIVersion and Kind name the file's format.
const (
	APIVersion = "flotilla.dev/v1alpha1"
	Kind       = "WorkBundle"
	// MaxSize is the largest bundle read: a release's work is bounded by
	// what NATS carries (a few MiB per message, a few hundred apps).
	MaxSize = 256 << 20
	// MaxMessages is the most work messages one bundle holds.
	MaxMessages = 10000
)

// Bundle is one cluster's work.
type Bundle struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Cluster    string    `json:"cluster"`
	ExportedAt time.Time `json:"exportedAt"`
	// Digest is "sha256:<hex>" of Messages as JSON.
	Digest   string    `json:"digest"`
	Messages []Message `json:"messages"`
}

// Message is one work message as the work stream holds it.
type Message struct {
	Subject string              `json:"subject"`
	Header  map[string][]string `json:"header"`
	Data    []byte              `json:"data"`
}

// Msg is the message as NATS would deliver it.
func (m Message) Msg() *nats.Msg {
	return &nats.Msg{Subject: m.Subject, Header: nats.Header(m.Header), Data: m.Data}
}

// New is a bundle of msgs (each a work message of cluster).
func New(cluster string, at time.Time, msgs []Message) (*Bundle, error) {
	b := &Bundle{APIVersion: APIVersion, Kind: Kind, Cluster: cluster, ExportedAt: at.UTC(), Messages: msgs}
	d, err := digest(msgs)
	if err != nil {
		return nil, err
	}
	b.Digest = d
	return b, b.validate()
}

func digest(msgs []Message) (string, error) {
	data, err := json.Marshal(msgs)
	if err != nil {
		return "", fmt.Errorf("bundle digest: %w", err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Encode writes the bundle.
func (b *Bundle) Encode(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	if err := enc.Encode(b); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// Decode reads a bundle, checking its form and digest: what it says is
// checked by whoever applies it (each message's seal).
func Decode(r io.Reader) (*Bundle, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("bundle larger than %d MiB", MaxSize>>20)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	b := &Bundle{}
	if err := dec.Decode(b); err != nil {
		return nil, fmt.Errorf("not a work bundle: %w", err)
	}
	if err := b.validate(); err != nil {
		return nil, err
	}
	want, err := digest(b.Messages)
	if err != nil {
		return nil, err
	}
	if b.Digest != want {
		return nil, fmt.Errorf("bundle for cluster %s is damaged or altered: its digest is %s, its messages' %s", b.Cluster, b.Digest, want)
	}
	return b, nil
}

func (b *Bundle) validate() error {
	var errs []error
	if b.APIVersion != APIVersion || b.Kind != Kind {
		errs = append(errs, fmt.Errorf("apiVersion %q kind %q: want %s %s", b.APIVersion, b.Kind, APIVersion, Kind))
	}
	if msgs := validation.IsDNS1123Label(b.Cluster); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("cluster %q: %v", b.Cluster, msgs))
	}
	if len(b.Messages) == 0 {
		errs = append(errs, errors.New("no work in the bundle"))
	}
	if len(b.Messages) > MaxMessages {
		errs = append(errs, fmt.Errorf("%d messages: at most %d", len(b.Messages), MaxMessages))
	}
	for i, m := range b.Messages {
		if !bus.SubjectMatches(bus.WorkFilter(b.Cluster), m.Subject) {
			errs = append(errs, fmt.Errorf("message %d is on %q, not cluster %s's work", i, m.Subject, b.Cluster))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("not a valid work bundle: %w", errors.Join(errs...))
	}
	return nil
}

// Reader reads the work stream: as the bundler's NATS user may (direct
// gets of work subjects, the stream's subjects of one cluster).
type Reader interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
}

// Export reads cluster's newest work from the hub's work stream: of the
// applications named (namespace/name), or all of the cluster's.
func Export(ctx context.Context, js Reader, cluster string, apps []string, at time.Time) (*Bundle, error) {
	st, err := js.Stream(ctx, bus.StreamWork)
	if err != nil {
		return nil, fmt.Errorf("export: work stream: %w", err)
	}
	subjects := make([]string, 0, len(apps))
	for _, a := range apps {
		ns, name, ok := cut(a)
		if !ok {
			return nil, fmt.Errorf("export: %q is not namespace/name", a)
		}
		subjects = append(subjects, bus.WorkSubject(cluster, ns, name))
	}
	if len(apps) == 0 {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(bus.WorkFilter(cluster)))
		if err != nil {
			return nil, fmt.Errorf("export: the work of cluster %s: %w", cluster, err)
		}
		for s := range info.State.Subjects {
			subjects = append(subjects, s)
		}
		slices.Sort(subjects)
	}
	var msgs []Message
	for _, s := range subjects {
		m, err := st.GetLastMsgForSubject(ctx, s)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("export: no work on %s: the hub has sent cluster %s nothing of it", s, cluster)
		}
		if err != nil {
			return nil, fmt.Errorf("export: %s: %w", s, err)
		}
		msgs = append(msgs, Message{Subject: m.Subject, Header: m.Header, Data: m.Data})
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("export: the hub holds no work for cluster %s", cluster)
	}
	return New(cluster, at, msgs)
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}
