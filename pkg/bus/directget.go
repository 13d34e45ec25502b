package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastBySubject reads the newest message of one subject of a stream by a
// direct get on that subject alone, through the JetStream API at api
// (ServiceAPI, or ClusterAPI for an agent): what an agent's NATS user may
// do for its own subjects, without the stream's info (which would list
// every cluster's subjects). Not found is jetstream.ErrMsgNotFound.
func LastBySubject(ctx context.Context, nc *nats.Conn, api, stream, subject string) (*jetstream.RawStreamMsg, error) {
	msg, err := nc.RequestWithContext(ctx, api+".DIRECT.GET."+stream+"."+subject, nil)
	if err != nil {
		return nil, fmt.Errorf("read the newest %s of %s: %w", subject, stream, err)
	}
	if status := msg.Header.Get("Status"); status != "" {
		if status == "404" {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("read the newest %s of %s: %s %s", subject, stream, status, msg.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(msg.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("read the newest %s of %s: sequence %q: %w", subject, stream, msg.Header.Get("Nats-Sequence"), err)
	}
	stored, _ := time.Parse(time.RFC3339Nano, msg.Header.Get("Nats-Time-Stamp"))
	return &jetstream.RawStreamMsg{Subject: msg.Header.Get("Nats-Subject"), Sequence: seq, Header: msg.Header, Data: msg.Data, Time: stored}, nil
}

// Accepted reads whether the hub accepts a cluster, as its agent may:
// the newest value of the cluster's acceptance key, by direct get.
func Accepted(ctx context.Context, nc *nats.Conn, cluster string) (bool, error) {
	m, err := LastBySubject(ctx, nc, ClusterAPI, kvStream(BucketClusters), "$KV."+BucketClusters+"."+AcceptedKey(cluster))
	if err != nil {
		return false, err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return false, nil
	}
	return string(m.Data) == "true", nil
}

// Credential reads the user JWT the hub signed for a cluster's agent, as
// a joining agent may (jetstream.ErrMsgNotFound: none yet, or revoked).
func Credential(ctx context.Context, nc *nats.Conn, cluster string) (string, error) {
	m, err := LastBySubject(ctx, nc, ClusterAPI, kvStream(BucketClusters), CredentialSubject(cluster))
	if err != nil {
		return "", err
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return "", jetstream.ErrMsgNotFound
	}
	return string(m.Data), nil
}

// AgentConsumerConfig is a cluster's agent's work consumer, which the
// dispatcher makes when the hub accepts the cluster: only its cluster's
// work, the newest per application (an agent offline for a week does not
// replay every release in between), one message at a time.
func AgentConsumerConfig(cluster string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       AgentConsumer(cluster),
		FilterSubject: WorkFilter(cluster),
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// One message at a time: the work an agent killed mid-apply held
		// unacked blocks its restarted successor until the ack wait ends,
		// so it is short; a long apply stays its own by being marked in
		// progress every 10 s (Consume).
		AckWait:       30 * time.Second,
		MaxAckPending: 1,
		// Work is desired state: tried long (an API server down for a day),
		// never forever.
		MaxDeliver: 2000,
	}
}
