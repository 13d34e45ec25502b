package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots opens the object store holding releases' snapshots (package
// snapshot owns what is in it).
func Snapshots(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	store, err := js.ObjectStore(ctx, ObjectSnapshots)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", ObjectSnapshots, err)
	}
	return store, nil
}
