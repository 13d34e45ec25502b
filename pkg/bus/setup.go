package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
)

// The services that own streams and buckets: each sets up (creates or
// updates) only what it owns, and its NATS user may change nothing else.
const (
	OwnerPlanner    = "planner"
	OwnerDispatcher = "dispatcher"
	OwnerGate       = "gate"
)

// SetupOptions tune the streams for where they run.
type SetupOptions struct {
	// Replicas of each stream and bucket: 1 in dev and tests, 3 on a NATS cluster.
	Replicas int
	// Memory keeps streams in memory (tests that create many).
	Memory bool
	// Owner, when set, sets up only what that service owns (OwnerPlanner,
	// ...); empty sets up everything (tests, and an installer with the
	// rights of every service).
	Owner string
	// SizeFactor multiplies every byte limit (0: 1). The defaults reserve
	// about 4.5 GiB of the server's JetStream storage in all: enough for
	// thousands of applications over hundreds of clusters; a larger fleet
	// raises it. In memory (tests) the limits are a sixty-fourth.
	SizeFactor int
}

// scaled is a byte limit as o sizes it.
func (o SetupOptions) scaled(n int64) int64 {
	if o.SizeFactor > 1 {
		n *= int64(o.SizeFactor)
	}
	if o.Memory {
		n /= 64
	}
	return n
}

const (
	day = 24 * time.Hour
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// owned is a stream with its owner.
type owned struct {
	owner string
	cfg   jetstream.StreamConfig
}

// streams are the design's streams, each with limits that say what goes
// first when it is full: the oldest, in streams of history; a new publish,
// in the work stream, where every message is a cluster's desired state and
// none may silently go. A per-subject limit bounds one subject only: a
// cluster that floods many subjects under its own prefix (invented
// applications) evicts the oldest of every cluster's once the stream is
// full, which per-cluster limits are yet to bound.
func streams() []owned {
	return []owned{
		{OwnerPlanner, jetstream.StreamConfig{
			Name: StreamSteps, Subjects: []string{prefixSteps + ".>"},
			Description: "planner → dispatcher, gate: one event per step transition",
			MaxAge:      30 * day, Duplicates: 10 * time.Minute,
			MaxBytes: 256 * mib, MaxMsgSize: 2 * mib, Discard: jetstream.DiscardOld,
		}},
		{OwnerDispatcher, jetstream.StreamConfig{
			Name: StreamWork, Subjects: []string{prefixWork + ".>"},
			Description: "dispatcher → agent: desired state per cluster and application, last value per subject",
			// An agent offline for a week gets the newest desired state, not every release in between.
			MaxMsgsPerSubject: 1, Duplicates: 10 * time.Minute,
			MaxBytes: 1 * gib, MaxMsgSize: 2 * mib, Discard: jetstream.DiscardNew,
			// Agents read their own newest work by direct get, on subjects
			// their permissions can name.
			AllowDirect: true,
		}},
		// Updated before the dispatcher's and the gate's streams are made:
		// those take over subjects these held before each writer had a
		// stream of its own (Setup waits for it).
		{OwnerPlanner, jetstream.StreamConfig{
			Name: StreamStatus, Subjects: []string{prefixStatus + ".>"},
			Description: "agents → planner: cluster status and drift reports",
			MaxAge:      7 * day, Duplicates: 2 * time.Minute,
			MaxBytes: 512 * mib, MaxMsgSize: 1 * mib, MaxMsgsPerSubject: 256, Discard: jetstream.DiscardOld,
		}},
		{OwnerGate, jetstream.StreamConfig{
			Name: StreamApprovals, Subjects: []string{prefixApprovals + ".>"},
			Description: "bots → gate: approvals",
			MaxAge:      30 * day, Duplicates: 10 * time.Minute,
			MaxBytes: 64 * mib, MaxMsgSize: 64 * kib, MaxMsgsPerSubject: 1000, Discard: jetstream.DiscardOld,
		}},
		{OwnerDispatcher, jetstream.StreamConfig{
			Name: StreamDispatch, Subjects: []string{prefixDispatch + ".>"},
			Description: "dispatcher → planner: where each deploy step went, or why nowhere",
			MaxAge:      7 * day, Duplicates: 10 * time.Minute,
			MaxBytes: 64 * mib, MaxMsgSize: 256 * kib, Discard: jetstream.DiscardOld,
		}},
		{OwnerGate, jetstream.StreamConfig{
			Name: StreamGate, Subjects: []string{prefixGate + ".>"},
			Description: "gate → bots, planner, auditors: approval requests, decisions, audit records",
			MaxAge:      365 * day, Duplicates: 10 * time.Minute,
			MaxBytes: 256 * mib, MaxMsgSize: 1 * mib, MaxMsgsPerSubject: 100000, Discard: jetstream.DiscardOld,
		}},
		{OwnerDispatcher, jetstream.StreamConfig{
			Name: StreamBundles, Subjects: []string{prefixBundles + ".>"},
			Description: "operator → planner, dispatcher: status bundles carried by hand from sites with no link, signed by their agents",
			MaxAge:      30 * day, Duplicates: time.Hour,
			MaxBytes: 256 * mib, MaxMsgSize: 1 * mib, MaxMsgsPerSubject: 64, Discard: jetstream.DiscardOld,
		}},
		{OwnerDispatcher, jetstream.StreamConfig{
			Name: StreamClusters, Subjects: []string{prefixClusters + ".>"},
			Description: "agents → dispatcher: join requests and heartbeats",
			MaxAge:      time.Hour, Duplicates: time.Minute,
			MaxBytes: 64 * mib, MaxMsgSize: 64 * kib, MaxMsgsPerSubject: 16, Discard: jetstream.DiscardOld,
		}},
	}
}

// Streams returns the stream configurations of the design's table.
func Streams(o SetupOptions) []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	var out []jetstream.StreamConfig
	for _, s := range streams() {
		cfg := s.cfg
		cfg.Storage, cfg.Replicas, cfg.MaxBytes = storage, max(o.Replicas, 1), o.scaled(cfg.MaxBytes)
		out = append(out, cfg)
	}
	return out
}

// StreamConfig is the configuration of one of the design's streams ("" name: zero).
func StreamConfig(name string, o SetupOptions) jetstream.StreamConfig {
	for _, c := range Streams(o) {
		if c.Name == name {
			return c
		}
	}
	return jetstream.StreamConfig{}
}

// StreamOwner names the service that owns a stream.
func StreamOwner(stream string) string {
	for _, s := range streams() {
		if s.cfg.Name == stream {
			return s.owner
		}
	}
	return ""
}

type ownedKV struct {
	owner string
	cfg   jetstream.KeyValueConfig
}

func buckets() []ownedKV {
	return []ownedKV{
		{OwnerPlanner, jetstream.KeyValueConfig{Bucket: BucketRuns, Description: "planner run state per application, compare-and-set on revision",
			History: 5, MaxValueSize: 1 * mib, MaxBytes: 256 * mib}},
		{OwnerDispatcher, jetstream.KeyValueConfig{Bucket: BucketClusters, Description: "dispatcher cluster registry",
			History: 5, MaxValueSize: 16 * kib, MaxBytes: 32 * mib}},
		{OwnerGate, jetstream.KeyValueConfig{Bucket: BucketGate, Description: "gate: steps waiting for a decision",
			History: 5, MaxValueSize: 512 * kib, MaxBytes: 64 * mib}},
	}
}

// subjectsOverlap is the server's answer to a stream taking subjects
// another still holds.
const subjectsOverlap = 10065

// Setup creates or updates the streams, KV buckets and object store of
// o.Owner (all of them without one). It is idempotent: every service calls
// it at start. A stream whose subjects another still holds (a planner not
// yet upgraded) is tried again for up to a minute.
func Setup(ctx context.Context, js jetstream.JetStream, o SetupOptions) error {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	replicas := max(o.Replicas, 1)
	mine := func(owner string) bool { return o.Owner == "" || o.Owner == owner }
	for _, s := range streams() {
		if !mine(s.owner) {
			continue
		}
		cfg := s.cfg
		cfg.Storage, cfg.Replicas, cfg.MaxBytes = storage, replicas, o.scaled(cfg.MaxBytes)
		// The sources of sites' reports (pkg/site) are the dispatcher's
		// to add and remove: setting a stream up again keeps them.
		if existing, err := js.Stream(ctx, cfg.Name); err == nil {
			was := existing.CachedInfo().Config
			cfg.Sources = was.Sources
			cfg.Replicas, cfg.MaxBytes = raised(was.Replicas, cfg.Replicas), raisedLimit(was.MaxBytes, cfg.MaxBytes)
			cfg.MaxMsgSize = int32(raisedLimit(int64(was.MaxMsgSize), int64(cfg.MaxMsgSize)))
			cfg.MaxAge = time.Duration(raisedLimit(int64(was.MaxAge), int64(cfg.MaxAge)))
		}
		if err := retrySetup(ctx, func() error { _, err := js.CreateOrUpdateStream(ctx, cfg); return err }); err != nil {
			return fmt.Errorf("set up stream %s: %w", cfg.Name, err)
		}
	}
	for _, b := range buckets() {
		if !mine(b.owner) {
			continue
		}
		kv := b.cfg
		kv.Storage, kv.Replicas, kv.MaxBytes = storage, replicas, o.scaled(kv.MaxBytes)
		if existing, err := js.Stream(ctx, KVStream(kv.Bucket)); err == nil {
			was := existing.CachedInfo().Config
			kv.Replicas, kv.MaxBytes = raised(was.Replicas, kv.Replicas), raisedLimit(was.MaxBytes, kv.MaxBytes)
		}
		if err := retrySetup(ctx, func() error { _, err := js.CreateOrUpdateKeyValue(ctx, kv); return err }); err != nil {
			return fmt.Errorf("set up KV %s: %w", kv.Bucket, err)
		}
	}
	if mine(OwnerPlanner) {
		obj := jetstream.ObjectStoreConfig{
			Bucket: ObjectSnapshots, Description: "release snapshots, named by application, revision and digest",
			Storage: storage, Replicas: replicas, MaxBytes: o.scaled(2 * gib),
		}
		if existing, err := js.Stream(ctx, objStream(obj.Bucket)); err == nil {
			was := existing.CachedInfo().Config
			obj.Replicas, obj.MaxBytes = raised(was.Replicas, obj.Replicas), raisedLimit(was.MaxBytes, obj.MaxBytes)
		}
		if err := retrySetup(ctx, func() error { _, err := js.CreateOrUpdateObjectStore(ctx, obj); return err }); err != nil {
			return fmt.Errorf("set up object store %s: %w", ObjectSnapshots, err)
		}
	}
	return nil
}

// setupPatience is how long setting a stream up is tried again while the
// servers are not ready for it.
const setupPatience = time.Minute

// retrySetup runs create until it succeeds, fails for good, or
// setupPatience passed. Tried again: a stream whose subjects another
// service's stream still holds (one moved between streams, the other not
// yet set up again), and what a NATS cluster says while it forms or a
// node is away: no answer in time, no responders, JetStream temporarily
// unavailable, no peers (yet) for the replicas, insufficient resources.
func retrySetup(ctx context.Context, create func() error) error {
	deadline := time.Now().Add(setupPatience)
	for {
		err := create()
		if err == nil || !transientSetup(ctx, err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Codes of a NATS cluster not (yet) able to place or agree on a stream.
const (
	clusterNotAvailable = 10008
	clusterNoPeers      = 10005
	insufficientRes     = 10023
	clusterNotLeader    = 10009
	duplicateInProcess  = 10158 // JSStreamDuplicateMessageConflict
)

func transientSetup(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case subjectsOverlap, clusterNotAvailable, clusterNoPeers, insufficientRes, clusterNotLeader:
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// raised is the larger replica count: a service setting up its streams
// again (every start, every replica) never takes replicas from a stream an
// operator raised, which would lose its data with one NATS node.
func raised(was, want int) int { return max(was, want) }

// raisedLimit is the looser of two limits, where zero or less is none: a
// limit an operator raised (or lifted) stays so.
func raisedLimit(was, want int64) int64 {
	if was <= 0 || want <= 0 {
		return min(was, want, 0) // none (the server's -1 or 0)
	}
	return max(was, want)
}

// AwaitStreams waits until every stream named exists (another service
// owns and makes it), logging once a second which it waits for, and
// while NATS does not answer for now (a cluster forming).
func AwaitStreams(ctx context.Context, js jetstream.JetStream, log *slog.Logger, names ...string) error {
	for _, name := range names {
		for {
			_, err := js.Stream(ctx, name)
			if err == nil {
				break
			}
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				log.Info("waiting for a stream another service makes", "stream", name, "owner", StreamOwner(name))
			case IsTransient(err) && ctx.Err() == nil:
				log.Info("waiting for NATS to answer", "stream", name, "err", err)
			default:
				return fmt.Errorf("stream %s: %w", name, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// BindReplicasFlag binds --stream-replicas (default $FLOTILLA_STREAM_REPLICAS,
// else 1) to p: the replicas a hub service creates its streams and buckets
// with. Setting them up again never lowers what a stream has.
func BindReplicasFlag(fs *pflag.FlagSet, p *int) {
	def := 1
	if v, err := strconv.Atoi(os.Getenv("FLOTILLA_STREAM_REPLICAS")); err == nil && v > 0 {
		def = v
	}
	fs.IntVar(p, "stream-replicas", def, "replicas of the streams and buckets this service creates: 3 on a NATS cluster, 1 on one server; an existing stream's are never lowered ($FLOTILLA_STREAM_REPLICAS)")
}
