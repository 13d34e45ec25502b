package snapshot_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/snapshot"
)

// The same rules over the real object store the services use.
func TestSnapshotsInTheRealObjectStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a NATS server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := natstest.New(t).JetStream(t)
	if err := bus.Setup(ctx, js, bus.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := bus.Snapshots(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	objects := []json.RawMessage{json.RawMessage(`{"kind":"ConfigMap","data":{"a":"` + strings.Repeat("y", snapshot.InlineLimit) + `"}}`)}
	ref, err := snapshot.Put(ctx, store, "demo", "big", 2, objects)
	if err != nil {
		t.Fatal(err)
	}
	step, err := snapshot.ForStep(ctx, store, ref)
	if err != nil {
		t.Fatal(err)
	}
	if step.ObjectStore != ref.Object {
		t.Fatalf("a %d-byte snapshot travels %+v, want by name", ref.Size, step)
	}
	work, byName, err := snapshot.ForWork(ctx, store, step, snapshot.GzipLimitFor(js.Conn().MaxPayload()))
	if err != nil || byName || len(work.Gzip) == 0 {
		t.Fatalf("ForWork() = %+v, %v, %v; want it compressed", work, byName, err)
	}
	got, err := snapshot.Open(ctx, store, step)
	if err != nil || len(got) != 1 {
		t.Fatalf("Open(by name) = %d objects, %v", len(got), err)
	}
	if got, err = snapshot.Open(ctx, nil, work); err != nil || len(got) != 1 {
		t.Fatalf("Open(compressed, no store) = %d objects, %v", len(got), err)
	}
	if err := snapshot.Delete(ctx, store, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Open(ctx, store, step); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("Open(deleted) = %v, want not found", err)
	}
}
