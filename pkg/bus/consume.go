package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// Publisher is the part of JetStream that publishing needs.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Publish encodes e and publishes it on subject, waiting for the stream's
// ack. A duplicate (same event ID within the stream's window) is acked
// without being stored again; the ack says so. opts add expectations (such
// as the subject's last sequence). While NATS does not answer for now (a
// cluster electing the stream's leader) it is sent again, for up to
// PublishPatience: the event's ID makes a copy that did land a duplicate.
func Publish(ctx context.Context, js Publisher, subject string, e *events.Event, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	msg, err := events.Encode(subject, e)
	if err != nil {
		return nil, err
	}
	ack, err := publishPatiently(ctx, js, msg, opts)
	if err != nil {
		return nil, fmt.Errorf("publish %s %s on %s: %w", e.Type, e.ID, subject, err)
	}
	return ack, nil
}

// PublishPatience is how long Publish sends again while NATS does not
// answer.
const PublishPatience = 15 * time.Second

func publishPatiently(ctx context.Context, js Publisher, msg *nats.Msg, opts []jetstream.PublishOpt) (*jetstream.PubAck, error) {
	deadline := time.Now().Add(PublishPatience)
	for {
		ack, err := js.PublishMsg(ctx, msg, opts...)
		if err == nil || !IsTransient(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Sealer seals an encoded message in place (pkg/seal).
type Sealer interface {
	Seal(msg *nats.Msg) error
}

// PublishSealed is Publish with the message sealed by s first (nil: not sealed).
func PublishSealed(ctx context.Context, js Publisher, subject string, e *events.Event, s Sealer, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	msg, err := events.Encode(subject, e)
	if err != nil {
		return nil, err
	}
	if s != nil {
		if err := s.Seal(msg); err != nil {
			return nil, err
		}
	}
	ack, err := publishPatiently(ctx, js, msg, opts)
	if err != nil {
		return nil, fmt.Errorf("publish %s %s on %s: %w", e.Type, e.ID, subject, err)
	}
	return ack, nil
}

// Handler processes one decoded event. Returning nil acks the message;
// Retry(d, err) naks it for redelivery after d; Terminate(err) or any error
// wrapping events.ErrInvalid stops redelivery and records the reason; any
// other error is retried after DefaultRetryDelay.
type Handler func(ctx context.Context, e *events.Event) error

// DefaultRetryDelay is the redelivery delay of a handler error that says nothing else.
const DefaultRetryDelay = 2 * time.Second

type retryError struct {
	after time.Duration
	err   error
}

func (r *retryError) Error() string { return fmt.Sprintf("retry in %v: %v", r.after, r.err) }
func (r *retryError) Unwrap() error { return r.err }

// Retry asks for redelivery after d.
func Retry(d time.Duration, err error) error { return &retryError{after: d, err: err} }

// IsWrongLastSequence says whether a publish or a bucket's compare-and-set
// failed because its subject moved on since the sequence it expected
// (another writer came first). A replicated stream says so with its own
// code (10164) while another write to the subject is still being agreed
// on, which the client reports as a revision mismatch: all of them are
// the same race lost, to be read again, never a failure.
func IsWrongLastSequence(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// IsTransient says whether err is NATS not answering for now: a request
// unanswered in time, no responders, no response from the stream, or a
// cluster that cannot handle it at the moment (electing a leader, a node
// lost). Tried again a little later, the same request may succeed (one
// that did land is seen by reading again).
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// A publish whose message ID another publish of it (a replica's,
		// or the same one sent again) still has in process: once that one
		// is stored, this one is a duplicate, and dropped.
		return apiErr.ErrorCode == clusterNotAvailable || apiErr.ErrorCode == clusterNotLeader || apiErr.ErrorCode == duplicateInProcess
	}
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// IsRetry says whether err asks for redelivery (made by Retry).
func IsRetry(err error) bool {
	var r *retryError
	return errors.As(err, &r)
}

type terminalError struct{ err error }

func (t *terminalError) Error() string { return t.err.Error() }
func (t *terminalError) Unwrap() error { return t.err }

// Terminate says the message will never succeed: it is not redelivered.
func Terminate(err error) error { return &terminalError{err: err} }

// IsTerminal says whether err says its message will never succeed (made
// by Terminate, or invalid).
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t) || errors.Is(err, events.ErrInvalid)
}

// ConsumeOption tunes Consume.
type ConsumeOption func(*consumeOptions)

type consumeOptions struct {
	rejected func(ctx context.Context, msg jetstream.Msg, err error)
	pullMax  int
	timeout  time.Duration
	progress time.Duration
}

// DefaultHandleTimeout bounds one message's handling: a call that hangs
// (an API server that never answers) is cancelled and the message tried
// again, rather than holding the consumer's slot for ever.
const DefaultHandleTimeout = 2 * time.Minute

// DefaultProgress is how often a message still being handled is marked
// in progress: under every consumer's ack wait (30 s and more), so that
// slow work is not delivered again to another replica meanwhile.
const DefaultProgress = 10 * time.Second

// HandleTimeout bounds each message's handling by d (zero: the default).
func HandleTimeout(d time.Duration) ConsumeOption {
	return func(o *consumeOptions) { o.timeout = d }
}

// Progress marks a message being handled in progress every d (zero: the
// default); it must be under the consumer's ack wait.
func Progress(d time.Duration) ConsumeOption {
	return func(o *consumeOptions) { o.progress = d }
}

// PullMax has at most n messages fetched ahead: a service consuming many
// consumers (one per cluster) keeps its buffers small.
func PullMax(n int) ConsumeOption {
	return func(o *consumeOptions) { o.pullMax = n }
}

// OnRejected has f told of every message that does not decode, before it
// is terminated (the gate audits malformed approvals so).
func OnRejected(f func(ctx context.Context, msg jetstream.Msg, err error)) ConsumeOption {
	return func(o *consumeOptions) { o.rejected = f }
}

// Consume runs h on every message of cons until ctx ends. A message that
// does not decode is terminated with the decoder's reason, so a corrupt
// event never loops. Consuming stops when ctx ends or on the returned
// context's Stop.
func Consume(ctx context.Context, cons jetstream.Consumer, log *slog.Logger, h Handler, opts ...ConsumeOption) (jetstream.ConsumeContext, error) {
	o := consumeOptions{timeout: DefaultHandleTimeout, progress: DefaultProgress}
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout <= 0 {
		o.timeout = DefaultHandleTimeout
	}
	if o.progress <= 0 {
		o.progress = DefaultProgress
	}
	copts := []jetstream.PullConsumeOpt{jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			log.Warn("consume", "err", err)
		}
	})}
	if o.pullMax > 0 {
		copts = append(copts, jetstream.PullMaxMessages(o.pullMax))
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		settle(ctx, msg, log, h, o)
	}, copts...)
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
	}()
	return cc, nil
}

// deliveredKey keys the message a Handler runs on in its context.
type deliveredKey struct{}

// Delivered is the message a Handler runs on, for what decoding leaves out
// (a signature's headers and the exact bytes it covers); nil outside a
// Handler.
func Delivered(ctx context.Context) jetstream.Msg {
	m, _ := ctx.Value(deliveredKey{}).(jetstream.Msg)
	return m
}

func settle(ctx context.Context, msg jetstream.Msg, log *slog.Logger, h Handler, o consumeOptions) {
	ctx = context.WithValue(ctx, deliveredKey{}, msg)
	e, err := events.DecodeMsg(msg)
	if err != nil {
		log.Warn("rejected event", "subject", msg.Subject(), "reason", err)
		if o.rejected != nil {
			o.rejected(ctx, msg, err)
		}
		_ = msg.TermWithReason(reason(err))
		return
	}
	err = handle(ctx, msg, h, e, o)
	// Lines about the event carry its trace.
	lctx := telemetry.Extract(ctx, e.TraceParent, e.TraceState)
	var retry *retryError
	var term *terminalError
	switch {
	case err == nil:
		_ = msg.Ack()
	case errors.As(err, &term), errors.Is(err, events.ErrInvalid):
		log.WarnContext(lctx, "rejected event", "type", e.Type, "id", e.ID, "reason", err)
		_ = msg.TermWithReason(reason(err))
	case errors.As(err, &retry):
		log.InfoContext(lctx, "retrying event", "type", e.Type, "id", e.ID, "after", retry.after, "err", retry.err)
		_ = msg.NakWithDelay(retry.after)
	default:
		log.WarnContext(lctx, "event failed, retrying", "type", e.Type, "id", e.ID, "after", DefaultRetryDelay, "err", err)
		_ = msg.NakWithDelay(DefaultRetryDelay)
	}
}

// handle runs h on e within the handling timeout, marking msg in progress
// while it runs.
func handle(ctx context.Context, msg jetstream.Msg, h Handler, e *events.Event, o consumeOptions) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(o.progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err := h(ctx, e)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("handling took longer than %v: %w", o.timeout, err)
	}
	return err
}

// reason fits an error into the server's advisory (kept short).
func reason(err error) string {
	s := err.Error()
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
