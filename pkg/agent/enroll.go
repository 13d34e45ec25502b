package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/site"
)

// Enroll makes sure the agent's identity file (opts.Identity) holds a
// credential the hub's NATS takes, and returns the agent's key pair. The
// file holds the agent's own seed, made here the first time (the private
// key never leaves the cluster), and the user JWT the hub signed for it.
// Without a JWT, or with one the servers refuse (revoked: the cluster was
// removed from the hub), the agent asks to join with the bootstrap
// credential (opts.Bootstrap), which can do nothing else, and waits until
// the hub accepts the cluster and signs it one.
func Enroll(ctx context.Context, log *slog.Logger, opts Options, conn bus.ConnectOptions) (nkeys.KeyPair, error) {
	kp, token, err := readIdentity(opts.Identity)
	if err != nil {
		return nil, err
	}
	pub, _ := kp.PublicKey()
	log = log.With("cluster", opts.Cluster, "nkey", pub)
	if token != "" {
		if err := creds.CheckCredential(token, opts.Cluster, pub); err != nil {
			log.Warn("credential not usable: asking to join again", "err", err)
		} else {
			conn.Creds, conn.NKey = opts.Identity, ""
			nc, _, err := conn.Connect()
			if err == nil {
				nc.Close()
				return kp, nil
			}
			if !refused(err) {
				return nil, fmt.Errorf("agent: log in with %s: %w", opts.Identity, err)
			}
			log.Warn("the hub's NATS refuses this agent's credential: asking to join again", "err", err)
		}
	}
	if opts.Bootstrap == "" {
		return nil, fmt.Errorf("agent: %s holds no usable credential and no --nats-bootstrap-creds is given to ask for one", opts.Identity)
	}
	conn.Creds, conn.NKey, conn.InboxPrefix = opts.Bootstrap, "", bus.BootstrapInboxPrefix
	nc, js, err := conn.Connect()
	if err != nil {
		return nil, fmt.Errorf("agent: log in with the bootstrap credential: %w", err)
	}
	defer nc.Close()
	every := min(opts.heartbeat(), time.Second)
	var asked time.Time
	for {
		if time.Since(asked) >= opts.heartbeat() {
			if err := askToJoin(ctx, js, kp, opts); err != nil {
				log.Warn("ask to join, trying again", "err", err)
			} else {
				if asked.IsZero() {
					log.Info("asked to join the hub with the bootstrap credential: waiting to be accepted (kubectl flotilla cluster accept " + opts.Cluster + ")")
				}
				asked = time.Now()
			}
		}
		token, err := bus.Credential(ctx, nc, opts.Cluster)
		switch {
		case err == nil:
			if cerr := creds.CheckCredential(token, opts.Cluster, pub); cerr != nil {
				log.Debug("not (yet) this agent's credential", "err", cerr)
				break
			}
			if err := writeIdentity(opts.Identity, kp, token); err != nil {
				return nil, err
			}
			log.Info("accepted by the hub: credential received")
			return kp, nil
		case errors.Is(err, jetstream.ErrMsgNotFound), errors.Is(err, nats.ErrNoResponders):
		default:
			if ctx.Err() == nil {
				log.Warn("read credential", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(every):
		}
	}
}

func (o Options) heartbeat() time.Duration {
	if o.Heartbeat <= 0 {
		return 10 * time.Second
	}
	return o.Heartbeat
}

// refused says whether a connect failed because the server refused the
// credential (as opposed to not being reachable).
func refused(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// askToJoin publishes a join signed with the agent's key.
func askToJoin(ctx context.Context, js jetstream.JetStream, kp nkeys.KeyPair, opts Options) error {
	id := fmt.Sprintf("%s.join.%d", opts.Cluster, time.Now().UnixNano())
	pub, proof, err := creds.SignJoin(kp, opts.Cluster, id)
	if err != nil {
		return err
	}
	e := events.New(id, events.SourceAgent(opts.Cluster), events.TypeClusterJoin, opts.Cluster, &events.ClusterJoinData{
		Cluster: opts.Cluster, HeartbeatMillis: max(opts.heartbeat().Milliseconds(), 1), Labels: joinLabels(opts),
		NKey: pub, Proof: proof,
	})
	ctx, cancel := context.WithTimeout(ctx, opts.heartbeat())
	defer cancel()
	_, err = bus.Publish(ctx, js, bus.ClusterSubject(opts.Cluster, "join"), e)
	return err
}

// readIdentity reads the agent's seed and JWT from path, making the seed
// first when the file does not exist.
func readIdentity(path string) (nkeys.KeyPair, string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, "", err
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, "", err
		}
		if err := creds.WriteFile(path, append(seed, '\n')); err != nil {
			return nil, "", fmt.Errorf("agent: write its key %s: %w", path, err)
		}
		return kp, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("agent: read its identity %s: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("agent: identity %s: %w", path, err)
	}
	if !isUserSeed(kp) {
		return nil, "", fmt.Errorf("agent: identity %s holds no user key", path)
	}
	if !bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		return kp, "", nil // a bare seed: no credential yet
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return nil, "", fmt.Errorf("agent: identity %s: %w", path, err)
	}
	return kp, token, nil
}

func isUserSeed(kp nkeys.KeyPair) bool {
	pub, err := kp.PublicKey()
	return err == nil && nkeys.IsValidPublicUserKey(pub)
}

// writeIdentity writes the agent's credentials file: its JWT and seed.
func writeIdentity(path string, kp nkeys.KeyPair, token string) error {
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	data, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		return err
	}
	// Replaced whole: a kill mid-write leaves the old file.
	tmp := path + ".new"
	if err := creds.WriteFile(tmp, data); err != nil {
		return fmt.Errorf("agent: write its credential %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// joinLabels are the labels an agent proposes for its ManagedCluster.
func joinLabels(opts Options) map[string]string {
	if opts.Site == "" {
		return opts.Labels
	}
	labels := maps.Clone(opts.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[site.Label] = opts.Site
	return labels
}
