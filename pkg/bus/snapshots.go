package bus

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// SnapshotStore is the part of an object store reading snapshots needs.
type SnapshotStore interface {
	GetBytes(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) ([]byte, error)
}

// Snapshots opens the object store holding releases' snapshots.
func Snapshots(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	store, err := js.ObjectStore(ctx, ObjectSnapshots)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", ObjectSnapshots, err)
	}
	return store, nil
}

// ReadSnapshot reads snapshot name: the JSON array of its objects.
func ReadSnapshot(ctx context.Context, store SnapshotStore, name string) ([]byte, error) {
	array, err := store.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", name, err)
	}
	return array, nil
}

// SnapshotObjects reads snapshot name and decodes its objects (their
// digest is the reader's to check, against what vouches for them).
func SnapshotObjects(ctx context.Context, store SnapshotStore, name string) ([]json.RawMessage, error) {
	array, err := ReadSnapshot(ctx, store, name)
	if err != nil {
		return nil, err
	}
	var objects []json.RawMessage
	if err := json.Unmarshal(array, &objects); err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", name, err)
	}
	return objects, nil
}
