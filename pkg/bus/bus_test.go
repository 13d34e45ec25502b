package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

func TestSubjects(t *testing.T) {
	tests := []struct{ got, want string }{
		{StepSubject("demo", "demo"), "flotilla.steps.demo.demo"},
		{WorkSubject("managedcluster-c5", "demo", "web.v2"), "flotilla.work.managedcluster-c5.demo.web_v2"},
		{WorkFilter("c1"), "flotilla.work.c1.>"},
		{WorkAppFilter("demo", "web.v2"), "flotilla.work.*.demo.web_v2"},
		{WorkCluster(WorkSubject("c1", "demo", "a")), "c1"},
		{StatusSubject("c1", "ns", "app"), "flotilla.status.c1.ns.app"},
		{DispatchSubject("ns", "app"), "flotilla.dispatch.ns.app"},
		{ApprovalSubject("ns", "app"), "flotilla.approvals.ns.app"},
		{ClusterSubject("c1", "heartbeat"), "flotilla.clusters.c1.heartbeat"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.New(t).JetStream(t)
	return js
}

func deleted(id, app string) *events.Event {
	return events.New(id, events.SourcePlanner, events.TypeApplicationDeleted, "", &events.ApplicationDeletedData{Namespace: "demo", Application: app, UID: "u-" + app})
}

func TestSetupIsIdempotentAndWorkKeepsTheLastPerSubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := connect(t)
	for i := 0; i < 2; i++ {
		if err := Setup(ctx, js, SetupOptions{}); err != nil {
			t.Fatalf("setup #%d: %v", i+1, err)
		}
	}
	for _, name := range []string{StreamSteps, StreamWork, StreamDispatch, StreamStatus, StreamClusters, StreamApprovals, StreamGate} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	if _, err := js.KeyValue(ctx, BucketRuns); err != nil {
		t.Errorf("KV %s: %v", BucketRuns, err)
	}
	if _, err := js.ObjectStore(ctx, ObjectSnapshots); err != nil {
		t.Errorf("object store: %v", err)
	}

	// Three releases for one cluster+app, one for another app: the work
	// stream keeps the newest of each.
	for i, id := range []string{"r1", "r2", "r3"} {
		if _, err := Publish(ctx, js, WorkSubject("c1", "demo", "a"), deleted(id, "a")); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if _, err := Publish(ctx, js, WorkSubject("c1", "demo", "b"), deleted("b1", "b")); err != nil {
		t.Fatal(err)
	}
	st, _ := js.Stream(ctx, StreamWork)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("work stream holds %d messages, want 2 (last per subject)", info.State.Msgs)
	}
	last, err := st.GetLastMsgForSubject(ctx, WorkSubject("c1", "demo", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if got := last.Header.Get("ce-id"); got != "r3" {
		t.Errorf("last work for a = %s, want r3", got)
	}
}

func TestPublishDropsDuplicateIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := connect(t)
	if err := Setup(ctx, js, SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	first, err := Publish(ctx, js, StepSubject("demo", "a"), deleted("same", "a"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := Publish(ctx, js, StepSubject("demo", "a"), deleted("same", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate || first.Sequence != second.Sequence {
		t.Errorf("acks %+v then %+v: want the second flagged duplicate of the first", first, second)
	}
	if _, err := Publish(ctx, js, StepSubject("demo", "a"), &events.Event{ID: "x", Type: events.TypeStepStarted, Data: &events.StepData{}}); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("publishing an invalid event: %v, want ErrInvalid", err)
	}
}

// A corrupt message is terminated at once; a handler's Retry redelivers;
// Terminate stops; success acks. Nothing loops.
func TestConsumeSettlesEachMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t)
	if err := Setup(ctx, js, SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	// Corrupt: not a CloudEvent at all.
	if _, err := js.Publish(ctx, StepSubject("demo", "corrupt"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"ok", "retry", "term"} {
		if _, err := Publish(ctx, js, StepSubject("demo", app), deleted("id-"+app, app)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, StreamSteps, jetstream.ConsumerConfig{
		Durable: "test", AckPolicy: jetstream.AckExplicitPolicy, MemoryStorage: true, AckWait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var calls = map[string]*atomic.Int32{"ok": {}, "retry": {}, "term": {}}
	done := make(chan struct{})
	var once atomic.Bool
	cc, err := Consume(ctx, cons, slog.New(slog.DiscardHandler), func(ctx context.Context, e *events.Event) error {
		app := e.Data.(*events.ApplicationDeletedData).Application
		if m := Delivered(ctx); m == nil || m.Headers().Get(events.HeaderID) != e.ID {
			t.Errorf("%s: the handler's context lacks its delivered message", app)
		}
		n := calls[app].Add(1)
		switch app {
		case "retry":
			if n == 1 {
				return Retry(100*time.Millisecond, errors.New("not yet"))
			}
			if once.CompareAndSwap(false, true) {
				close(done)
			}
		case "term":
			return Terminate(errors.New("never"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("retried message was not redelivered")
	}
	// The end point: the server holds nothing more to deliver or redeliver
	// (a nak'd message stays ack-pending until it is acked or terminated),
	// so no handler can run again.
	eventually.True(t, 20*time.Second, "every message settled", func() (bool, error) {
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.NumAckPending == 0 && info.NumPending == 0,
			fmt.Errorf("consumer has %d ack pending, %d pending", info.NumAckPending, info.NumPending)
	})
	for app, want := range map[string]int32{"ok": 1, "retry": 2, "term": 1} {
		if got := calls[app].Load(); got != want {
			t.Errorf("%s handled %d times, want %d", app, got, want)
		}
	}
}

// A message handled longer than its consumer's ack wait is marked in
// progress meanwhile, so it is not delivered again (to another replica)
// while it is still being worked on; a handler that hangs is cancelled at
// the handling timeout and its message tried again.
func TestConsumeBoundsAndKeepsAliveEachHandling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t)
	if err := Setup(ctx, js, SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"slow", "hung"} {
		if _, err := Publish(ctx, js, StepSubject("demo", app), deleted("id-"+app, app)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateConsumer(ctx, StreamSteps, jetstream.ConsumerConfig{
		Durable: "test", AckPolicy: jetstream.AckExplicitPolicy, MemoryStorage: true, AckWait: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var slow, hung atomic.Int32
	hungDone := make(chan error, 10)
	cc, err := Consume(ctx, cons, slog.New(slog.DiscardHandler), func(ctx context.Context, e *events.Event) error {
		switch e.Data.(*events.ApplicationDeletedData).Application {
		case "slow":
			slow.Add(1)
			select {
			case <-time.After(2500 * time.Millisecond): // past the ack wait, twice
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			if hung.Add(1) > 1 {
				return nil
			}
			<-ctx.Done() // an API call that never answers
			hungDone <- ctx.Err()
			return ctx.Err()
		}
	}, Progress(300*time.Millisecond), HandleTimeout(4*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	select {
	case err := <-hungDone:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the hung handler ended with %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the hung handler was never cancelled")
	}
	eventually.True(t, 20*time.Second, "every message settled", func() (bool, error) {
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.NumAckPending == 0 && info.NumPending == 0,
			fmt.Errorf("consumer has %d ack pending, %d pending (slow %d, hung %d)", info.NumAckPending, info.NumPending, slow.Load(), hung.Load())
	})
	if got := slow.Load(); got != 1 {
		t.Errorf("the slow message was handled %d times, want once", got)
	}
	// (More than twice when a copy redelivered while it waited behind the
	// slow one is handled too.)
	if got := hung.Load(); got < 2 {
		t.Errorf("the hung message was handled %d times, want it cancelled, then handled again", got)
	}
}

// Every subject is in exactly one stream, of one writer: an agent's or a
// bot's subjects never share a stream (a duplicate window) with a service's.
func TestEachWriterHasItsOwnStream(t *testing.T) {
	tests := []struct {
		subject, stream string
	}{
		{StepSubject("demo", "demo"), StreamSteps},
		{WorkSubject("c1", "demo", "demo"), StreamWork},
		{DispatchSubject("demo", "demo"), StreamDispatch},
		{StatusSubject("c1", "demo", "demo"), StreamStatus},
		{ClusterSubject("c1", "heartbeat"), StreamClusters},
		{ApprovalSubject("demo", "demo"), StreamApprovals},
		{GateSubject("decisions", "demo", "demo"), StreamGate},
		{GateSubject("requested", "demo", "demo"), StreamGate},
		{GateSubject("audit", "demo", "demo"), StreamGate},
		{QuerySubject("c1"), ""},
		{"flotilla", ""},
	}
	for _, tt := range tests {
		if got := StreamOf(tt.subject); got != tt.stream {
			t.Errorf("StreamOf(%q) = %q, want %q", tt.subject, got, tt.stream)
		}
	}
	seen := map[string]string{}
	for _, s := range Streams(SetupOptions{}) {
		for _, subj := range s.Subjects {
			if other, ok := seen[subj]; ok {
				t.Errorf("subjects %s in streams %s and %s", subj, other, s.Name)
			}
			seen[subj] = s.Name
		}
	}
}

func TestSubjectMatches(t *testing.T) {
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*", "a.b.c", false},
		{"a.b", "a.b", true},
		{"a.b", "a.bc", false},
	}
	for _, tt := range tests {
		if got := subjectMatches(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
	}
}

// What NATS says while a cluster forms or elects a stream's leader is
// tried again; everything else is an answer.
func TestIsTransient(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"no response from stream", fmt.Errorf("write: %w", jetstream.ErrNoStreamResponse), true},
		{"no responders", nats.ErrNoResponders, true},
		{"timeout", nats.ErrTimeout, true},
		{"request deadline", fmt.Errorf("set up: %w", context.DeadlineExceeded), true},
		{"cluster unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"not leader", &jetstream.APIError{Code: 500, ErrorCode: 10009}, true},
		{"duplicate message ID in process", &jetstream.APIError{Code: 409, ErrorCode: 10158}, true},
		{"wrong last sequence", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{"stream not found", jetstream.ErrStreamNotFound, false},
		{"permission", errors.New("nats: permissions violation"), false},
	} {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("%s: IsTransient = %v, want %v", tt.name, got, tt.want)
		}
	}
}
