// Package snapshot owns a release's snapshot: the objects a release deploys,
// taken once so that production gets byte for byte what test got. It holds
// every rule about them in one place: their digest (what every reader checks
// before trusting the objects), where they are kept (the JetStream object
// store, named by application, revision and digest), how they travel (inline
// in a step event up to InlineLimit, by name above it; gzip-compressed inside
// a work message up to GzipLimit, because agents may not read the store), and
// opening any of those forms with the size bounded and the digest verified.
// The wire form itself is events.Snapshot.
package snapshot

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// Limits of the three ways a snapshot travels.
const (
	// InlineLimit is the largest snapshot (its JSON array) a step event
	// carries inline; a larger one travels by name in the object store.
	InlineLimit = 512 << 10
	// GzipLimit is the largest compressed snapshot a work message carries
	// (base64 in JSON grows it by a third; NATS's default max_payload is
	// 1 MiB). GzipLimitFor lowers it for a smaller max_payload.
	GzipLimit = 640 << 10
	// MaxSize bounds a snapshot once read or decompressed (a gzip bomb
	// stops here): far above any release the hub can hold, far below an
	// agent's memory.
	MaxSize = 64 << 20
)

// ErrInvalid marks a snapshot that will never open: corrupt, oversized, or
// not what its digest vouches for. Retrying cannot help; other errors (the
// store not answering) may pass.
var ErrInvalid = errors.New("invalid snapshot")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Reader is the part of the object store that opening a snapshot needs.
type Reader interface {
	GetBytes(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) ([]byte, error)
}

// Store is the part of the object store that keeping snapshots needs.
type Store interface {
	Reader
	PutBytes(ctx context.Context, name string, data []byte) (*jetstream.ObjectInfo, error)
	Delete(ctx context.Context, name string) error
}

// Ref locates a kept snapshot: its digest, its object's name and its size
// (the length of its JSON array).
type Ref struct {
	Digest string `json:"digest"`
	Object string `json:"object"`
	Size   int    `json:"size"`
}

// Digest is "sha256:<hex>" of the JSON array of objects: what a snapshot's
// digest vouches for.
func Digest(objects []json.RawMessage) (string, error) {
	all, err := json.Marshal(objects)
	if err != nil {
		return "", invalid("%v", err)
	}
	return digestOf(all), nil
}

func digestOf(array []byte) string {
	sum := sha256.Sum256(array)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Name is the object a release's snapshot is kept as:
// <ns>/<app>/v<revision>-<first 12 hex digits of its digest>. The digest in
// the name keeps two planners that race to cut the same revision from
// different hub states from overwriting each other's bytes.
func Name(ns, app string, revision int64, digest string) string {
	hexPart := strings.TrimPrefix(digest, "sha256:")
	return fmt.Sprintf("%s/%s/v%d-%s", ns, app, revision, hexPart[:min(12, len(hexPart))])
}

// Put keeps objects as the snapshot of an application's release.
func Put(ctx context.Context, store Store, ns, app string, revision int64, objects []json.RawMessage) (Ref, error) {
	array, err := json.Marshal(objects)
	if err != nil {
		return Ref{}, fmt.Errorf("snapshot of %s/%s v%d: %w", ns, app, revision, err)
	}
	if len(array) > MaxSize {
		return Ref{}, invalid("snapshot of %s/%s v%d is %d MiB, over %d MiB", ns, app, revision, len(array)>>20, MaxSize>>20)
	}
	return put(ctx, store, ns, app, revision, array)
}

// Copy keeps the snapshot from as the one of a later release (a rollback:
// byte for byte the earlier release's objects), after checking its digest.
func Copy(ctx context.Context, store Store, from Ref, ns, app string, revision int64) (Ref, error) {
	array, err := read(ctx, store, from.Object)
	if err != nil {
		return Ref{}, err
	}
	if d := digestOf(array); d != from.Digest {
		return Ref{}, invalid("snapshot %s is %s, not %s", from.Object, d, from.Digest)
	}
	return put(ctx, store, ns, app, revision, array)
}

func put(ctx context.Context, store Store, ns, app string, revision int64, array []byte) (Ref, error) {
	ref := Ref{Digest: digestOf(array), Size: len(array)}
	ref.Object = Name(ns, app, revision, ref.Digest)
	if _, err := store.PutBytes(ctx, ref.Object, array); err != nil {
		return Ref{}, fmt.Errorf("store snapshot %s: %w", ref.Object, err)
	}
	return ref, nil
}

// Delete removes a kept snapshot; one already gone is no error.
func Delete(ctx context.Context, store Store, ref Ref) error {
	if err := store.Delete(ctx, ref.Object); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete snapshot %s: %w", ref.Object, err)
	}
	return nil
}

// ForStep is what a step event carries of a kept snapshot: the objects
// inline up to InlineLimit, else its name.
func ForStep(ctx context.Context, store Reader, ref Ref) (*events.Snapshot, error) {
	if ref.Size > InlineLimit {
		return &events.Snapshot{Digest: ref.Digest, ObjectStore: ref.Object}, nil
	}
	objects, err := Open(ctx, store, &events.Snapshot{Digest: ref.Digest, ObjectStore: ref.Object})
	if err != nil {
		return nil, err
	}
	return &events.Snapshot{Digest: ref.Digest, Objects: objects}, nil
}

// ForWork is what a work message carries of s, for an agent whose NATS user
// may not read the object store (it holds every application's objects): s
// itself when inline; when it travels by name, the objects gzip-compressed
// inline if they fit in limit (GzipLimitFor), else still by name (then
// byName is true: only an agent allowed to read the store can open it).
func ForWork(ctx context.Context, store Reader, s *events.Snapshot, limit int) (out *events.Snapshot, byName bool, err error) {
	if s == nil || s.ObjectStore == "" {
		return s, false, nil
	}
	array, err := read(ctx, store, s.ObjectStore)
	if err != nil {
		return nil, false, err
	}
	if d := digestOf(array); d != s.Digest {
		return nil, false, invalid("snapshot %s is %s, not %s", s.ObjectStore, d, s.Digest)
	}
	gz, err := Gzip(array)
	if err != nil {
		return nil, false, err
	}
	if len(gz) > limit {
		return s, true, nil
	}
	return &events.Snapshot{Digest: s.Digest, Gzip: gz}, false, nil
}

// GzipLimitFor is GzipLimit, or less when the NATS server's max_payload
// (maxPayload, 0: unknown) is below the default: three quarters of it
// (base64), less 64 KiB for the rest of the message.
func GzipLimitFor(maxPayload int64) int {
	if maxPayload <= 0 {
		return GzipLimit
	}
	return max(0, min(GzipLimit, int(maxPayload)*3/4-64<<10))
}

// Open returns a snapshot's objects however it travels (inline, compressed,
// or by name from store, which may be nil for a reader that has none),
// after checking them against the snapshot's digest. Every error but the
// store's own wraps ErrInvalid.
func Open(ctx context.Context, store Reader, s *events.Snapshot) ([]json.RawMessage, error) {
	if s == nil {
		return nil, invalid("no snapshot")
	}
	var array []byte
	switch {
	case len(s.Objects) > 0:
		objects := s.Objects
		d, err := Digest(objects)
		if err != nil {
			return nil, err
		}
		if d != s.Digest {
			return nil, invalid("snapshot does not match its digest %s", s.Digest)
		}
		return objects, nil
	case len(s.Gzip) > 0:
		var err error
		if array, err = Gunzip(s.Gzip); err != nil {
			return nil, err
		}
	case s.ObjectStore != "":
		if store == nil {
			return nil, fmt.Errorf("snapshot %s travels by name and this reader has no access to the object store", s.ObjectStore)
		}
		var err error
		if array, err = read(ctx, store, s.ObjectStore); err != nil {
			return nil, err
		}
	default:
		return nil, invalid("snapshot has neither objects nor gzip nor objectStore")
	}
	if d := digestOf(array); d != s.Digest {
		return nil, invalid("snapshot does not match its digest %s", s.Digest)
	}
	var objects []json.RawMessage
	if err := json.Unmarshal(array, &objects); err != nil {
		return nil, invalid("snapshot is not a JSON array of objects: %v", err)
	}
	return objects, nil
}

func read(ctx context.Context, store Reader, name string) ([]byte, error) {
	array, err := store.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", name, err)
	}
	if len(array) > MaxSize {
		return nil, invalid("snapshot %s is %d MiB, over %d MiB", name, len(array)>>20, MaxSize>>20)
	}
	return array, nil
}

// Gzip compresses a snapshot's JSON array.
func Gzip(array []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(array); err != nil {
		return nil, fmt.Errorf("compress snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

// Gunzip decompresses a snapshot's JSON array, refusing one that grows
// past MaxSize.
func Gunzip(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, invalid("decompress: %v", err)
	}
	array, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
	if err != nil {
		return nil, invalid("decompress: %v", err)
	}
	if len(array) > MaxSize {
		return nil, invalid("decompressed snapshot is larger than %d MiB", MaxSize>>20)
	}
	return array, nil
}
