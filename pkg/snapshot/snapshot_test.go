package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/events"
)

// memStore is an object store in memory: the rules here are pure, the
// real store is exercised in store_test.go.
type memStore struct {
	objects map[string][]byte
	gets    int
}

func newMemStore() *memStore { return &memStore{objects: map[string][]byte{}} }

func (m *memStore) GetBytes(_ context.Context, name string, _ ...jetstream.GetObjectOpt) ([]byte, error) {
	m.gets++
	b, ok := m.objects[name]
	if !ok {
		return nil, jetstream.ErrObjectNotFound
	}
	return b, nil
}

func (m *memStore) PutBytes(_ context.Context, name string, data []byte) (*jetstream.ObjectInfo, error) {
	m.objects[name] = append([]byte(nil), data...)
	return &jetstream.ObjectInfo{}, nil
}

func (m *memStore) Delete(_ context.Context, name string) error {
	if _, ok := m.objects[name]; !ok {
		return jetstream.ErrObjectNotFound
	}
	delete(m.objects, name)
	return nil
}

func objectsOf(t *testing.T, size int) []json.RawMessage {
	t.Helper()
	return []json.RawMessage{
		json.RawMessage(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"` + strings.Repeat("x", size) + `"}}`),
		json.RawMessage(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}`),
	}
}

func mustDigest(t *testing.T, objects []json.RawMessage) string {
	t.Helper()
	d, err := Digest(objects)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The README's contract: <ns>/<app>/v<N>, suffixed with the start of the digest.
func TestNameIsTheDocumentedOne(t *testing.T) {
	digest := mustDigest(t, objectsOf(t, 1))
	name := Name("demo", "demo", 3, digest)
	want := regexp.MustCompile(`^demo/demo/v3-[0-9a-f]{12}$`)
	if !want.MatchString(name) {
		t.Errorf("Name() = %q, want <ns>/<app>/v<N>-<12 hex of the digest>", name)
	}
	if !strings.HasSuffix(name, strings.TrimPrefix(digest, "sha256:")[:12]) {
		t.Errorf("Name() = %q does not end with the digest's first 12 hex digits %s", name, digest)
	}
	if Name("demo", "demo", 3, mustDigest(t, objectsOf(t, 2))) == name {
		t.Error("two different snapshots of one revision share a name")
	}
}

func TestPutThenOpenEveryWay(t *testing.T) {
	ctx := context.Background()
	small, large := objectsOf(t, 10), objectsOf(t, InlineLimit+1)
	tests := []struct {
		name       string
		objects    []json.RawMessage
		wantInline bool
	}{
		{"small travels inline", small, true},
		{"large travels by name", large, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newMemStore()
			ref, err := Put(ctx, store, "demo", "demo", 1, tt.objects)
			if err != nil {
				t.Fatal(err)
			}
			if ref.Digest != mustDigest(t, tt.objects) {
				t.Errorf("ref digest %s is not the objects' %s", ref.Digest, mustDigest(t, tt.objects))
			}
			array, _ := json.Marshal(tt.objects)
			if ref.Size != len(array) {
				t.Errorf("ref size %d, want %d", ref.Size, len(array))
			}
			step, err := ForStep(ctx, store, ref)
			if err != nil {
				t.Fatal(err)
			}
			if inline := len(step.Objects) > 0; inline != tt.wantInline || (step.ObjectStore != "") == tt.wantInline {
				t.Fatalf("step snapshot inline=%v objectStore=%q, want inline=%v", inline, step.ObjectStore, tt.wantInline)
			}
			work, byName, err := ForWork(ctx, store, step, GzipLimit)
			if err != nil {
				t.Fatal(err)
			}
			if byName {
				t.Fatal("a one-letter megabyte does not fit compressed")
			}
			if !tt.wantInline && len(work.Gzip) == 0 {
				t.Errorf("work for a large snapshot is not compressed: %+v", work)
			}
			for form, s := range map[string]*events.Snapshot{"step": step, "work": work} {
				got, err := Open(ctx, store, s)
				if err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if mustDigest(t, got) != ref.Digest {
					t.Errorf("%s: opened objects are not the ones put", form)
				}
			}
		})
	}
}

func TestInlineLimitIsInclusive(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	for _, tt := range []struct {
		size   int
		inline bool
	}{{InlineLimit, true}, {InlineLimit + 1, false}} {
		ref := Ref{Digest: "sha256:x", Object: "o", Size: tt.size}
		store.objects["o"] = []byte("[]")
		ref.Digest = digestOf([]byte("[]"))
		s, err := ForStep(ctx, store, ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.ObjectStore == ""; got != tt.inline {
			t.Errorf("size %d: inline = %v, want %v", tt.size, got, tt.inline)
		}
	}
}

func TestWorkStaysByNameWhenTooLargeCompressed(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	ref, err := Put(ctx, store, "demo", "demo", 1, objectsOf(t, InlineLimit+1))
	if err != nil {
		t.Fatal(err)
	}
	s := &events.Snapshot{Digest: ref.Digest, ObjectStore: ref.Object}
	work, byName, err := ForWork(ctx, store, s, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !byName || work.ObjectStore != ref.Object || len(work.Gzip) > 0 {
		t.Errorf("ForWork(limit 100) = %+v byName=%v, want it by name", work, byName)
	}
	// Inline snapshots go as they are, without reading the store.
	store.gets = 0
	inline := &events.Snapshot{Digest: "sha256:x", Objects: []json.RawMessage{json.RawMessage(`{}`)}}
	if got, byName, err := ForWork(ctx, store, inline, 100); err != nil || got != inline || byName || store.gets != 0 {
		t.Errorf("ForWork(inline) = %+v, %v, %v (%d reads)", got, byName, err, store.gets)
	}
}

func TestGzipLimitFor(t *testing.T) {
	tests := []struct {
		maxPayload int64
		want       int
	}{
		{0, GzipLimit},
		{1 << 20, GzipLimit},
		{8 << 20, GzipLimit},
		{512 << 10, 512<<10*3/4 - 64<<10},
		{64 << 10, 0},
	}
	for _, tt := range tests {
		if got := GzipLimitFor(tt.maxPayload); got != tt.want {
			t.Errorf("GzipLimitFor(%d) = %d, want %d", tt.maxPayload, got, tt.want)
		}
	}
}

func TestOpenRefusesWhatTheDigestDoesNotVouchFor(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	objects := objectsOf(t, 10)
	ref, err := Put(ctx, store, "demo", "demo", 1, objects)
	if err != nil {
		t.Fatal(err)
	}
	tampered := objectsOf(t, 11)
	tamperedArray, _ := json.Marshal(tampered)
	gz, _ := Gzip(tamperedArray)
	store.objects["demo/other"] = tamperedArray
	notArray, _ := Gzip([]byte(`{"kind":"ConfigMap"}`))
	tests := []struct {
		name string
		s    *events.Snapshot
	}{
		{"inline objects changed", &events.Snapshot{Digest: ref.Digest, Objects: tampered}},
		{"compressed objects changed", &events.Snapshot{Digest: ref.Digest, Gzip: gz}},
		{"stored objects changed", &events.Snapshot{Digest: ref.Digest, ObjectStore: "demo/other"}},
		{"not gzip", &events.Snapshot{Digest: ref.Digest, Gzip: []byte("plain")}},
		{"compressed, not an array", &events.Snapshot{Digest: digestOf([]byte(`{"kind":"ConfigMap"}`)), Gzip: notArray}},
		{"no form", &events.Snapshot{Digest: ref.Digest}},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(ctx, store, tt.s)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open() = %v, want ErrInvalid", err)
			}
		})
	}
	// A missing object is the store's error, not an invalid snapshot: it may be retried.
	_, err = Open(ctx, store, &events.Snapshot{Digest: ref.Digest, ObjectStore: "gone"})
	if err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("Open(missing object) = %v, want the store's not-found", err)
	}
	if _, err := Open(ctx, nil, &events.Snapshot{Digest: ref.Digest, ObjectStore: ref.Object}); err == nil {
		t.Error("Open without a store opened a snapshot by name")
	}
}

// A bomb of valid JSON: only the size bound refuses it.
func TestGunzipBoundsTheSize(t *testing.T) {
	array := []byte(`["` + strings.Repeat("a", MaxSize) + `"]`)
	bomb, err := Gzip(array)
	if err != nil {
		t.Fatal(err)
	}
	if len(bomb) > 1<<20 {
		t.Fatalf("the bomb is %d bytes compressed; it should be small", len(bomb))
	}
	// Within the bound, the same shape opens: the size is what is refused.
	fits := []byte(`["` + strings.Repeat("a", MaxSize-10) + `"]`)
	fitsGz, _ := Gzip(fits)
	if _, err := Open(context.Background(), nil, &events.Snapshot{Digest: digestOf(fits), Gzip: fitsGz}); err != nil {
		t.Fatalf("a snapshot just under MaxSize: %v", err)
	}
	_, err = Open(context.Background(), nil, &events.Snapshot{Digest: digestOf(array), Gzip: bomb})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("larger than %d MiB", MaxSize>>20)) {
		t.Errorf("Open(bomb) = %v, want it refused for its size", err)
	}
}

func TestCopyKeepsTheBytesAndChecksTheDigest(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	ref, err := Put(ctx, store, "demo", "demo", 1, objectsOf(t, 10))
	if err != nil {
		t.Fatal(err)
	}
	back, err := Copy(ctx, store, ref, "demo", "demo", 4)
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest != ref.Digest || back.Size != ref.Size || back.Object != Name("demo", "demo", 4, ref.Digest) {
		t.Errorf("Copy() = %+v, from %+v", back, ref)
	}
	if string(store.objects[back.Object]) != string(store.objects[ref.Object]) {
		t.Error("the copy's bytes differ")
	}
	store.objects[ref.Object] = []byte(`[{"kind":"Tampered"}]`)
	if _, err := Copy(ctx, store, ref, "demo", "demo", 5); !errors.Is(err, ErrInvalid) {
		t.Errorf("Copy(tampered) = %v, want ErrInvalid", err)
	}
	if err := Delete(ctx, store, back); err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, store, back); err != nil {
		t.Errorf("deleting a deleted snapshot: %v", err)
	}
}

// FuzzOpen feeds arbitrary compressed bytes (they come off the network in
// a work message): Open must never panic, and what it accepts is a JSON
// array within MaxSize that matches its digest.
func FuzzOpen(f *testing.F) {
	gz, _ := Gzip([]byte(`[{"kind":"ConfigMap","data":{"a":"b"}},{}]`))
	f.Add(gz, true)
	f.Add([]byte{0x1f, 0x8b, 0x08}, false)
	f.Add([]byte("[]"), true)
	f.Fuzz(func(t *testing.T, data []byte, honest bool) {
		digest := "sha256:0"
		if honest {
			if array, err := Gunzip(data); err == nil {
				digest = digestOf(array)
			}
		}
		objects, err := Open(context.Background(), nil, &events.Snapshot{Digest: digest, Gzip: data})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open() = %v, not ErrInvalid", err)
			}
			return
		}
		array, err := Gunzip(data)
		if err != nil {
			t.Fatalf("opened what does not decompress: %v", err)
		}
		if len(array) > MaxSize {
			t.Fatalf("opened %d bytes, more than MaxSize", len(array))
		}
		if digestOf(array) != digest {
			t.Fatalf("opened objects whose digest is not %s", digest)
		}
		if objects == nil && string(array) != "[]" && string(array) != "null" {
			t.Fatalf("opened %q as no objects", array)
		}
	})
}
