package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/creds/credstest"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
)

// identity is a NATS user's credentials, as the production server (in
// operator mode) takes them.
type identity struct {
	name  string
	creds []byte
}

// client is one identity's connection; errs keeps what the server refused.
type client struct {
	t    *testing.T
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []error
}

func login(t *testing.T, s *natstest.Server, u identity, inbox string) *client {
	t.Helper()
	c := &client{t: t, name: u.name}
	opts := []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.errs = append(c.errs, err)
	})}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	c.nc, c.js = s.ConnectCreds(t, u.creds, opts...)
	return c
}

// clusterAPI makes the client's JetStream an agent's: the API as the
// clusters' account sees it.
func (c *client) clusterAPI() {
	js, err := jetstream.NewWithAPIPrefix(c.nc, bus.ClusterAPI)
	if err != nil {
		c.t.Fatal(err)
	}
	c.js = js
}

// refused waits until the server has refused the client's op ("Publish"
// or "Subscription") on subject: the server's own answer, not a timeout.
func (c *client) refused(op, subject string) {
	c.t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	eventually.True(c.t, 20*time.Second, c.name+": "+want, func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, err := range c.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return true, nil
			}
		}
		return false, fmt.Errorf("refusals so far: %v", c.errs)
	})
}

// short bounds a call the server refuses (a refused request gets no answer).
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

func workFor(cluster string) *events.Event {
	return events.New("work-"+cluster, events.SourceDispatcher, events.TypeWork, "demo/demo", &events.WorkData{
		AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "u"}, Cluster: cluster, Delete: true})
}

func statusOf(cluster string) *events.Event {
	return events.New("status-"+cluster+"-"+fmt.Sprint(time.Now().UnixNano()), events.SourceAgent(cluster), events.TypeClusterStatus, "demo/demo", &events.ClusterStatusData{
		AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "u", Release: "demo-v1", Revision: 1}, Cluster: cluster, Phase: events.ClusterApplied})
}

func heartbeatOf(cluster string) *events.Event {
	return events.New("hb-"+cluster+"-"+fmt.Sprint(time.Now().UnixNano()), events.SourceAgent(cluster), events.TypeClusterHeartbeat, cluster,
		&events.ClusterJoinData{Cluster: cluster, HeartbeatMillis: 1000})
}

// stored says whether the stream holds a message on subject (as the services see it).
func stored(t *testing.T, js jetstream.JetStream, stream, subject string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// Each identity's permissions (bus.AgentPermissions, CLIPermissions,
// BotPermissions) on a real nats-server with exactly those users: what the
// identity needs works, and what it must not do the server refuses, while
// the thing it reaches for exists (the other cluster has work).
func TestPermissionsOnARealServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := credstest.Start(t)
	s := h.Server
	user := func(name string, p bus.Permissions) identity { return identity{name, h.User(t, name, &p)} }
	agent := func(cluster string) identity { return identity{"agent-" + cluster, h.Agent(t, cluster)} }
	services := identity{"services", h.User(t, "services", nil)}
	agent1 := agent("c1")
	cliUser, botUser := user("cli", bus.CLIPermissions()), identity{"bot", h.Bot(t, "bot")}
	planner, dispatcher, gate := user("planner", bus.PlannerPermissions()), user("dispatcher", bus.DispatcherPermissions()), user("gate", bus.GatePermissions())
	// Clusters named like other identities' inboxes.
	agentCLI, agentBot := agent("cli"), agent("bot")
	hub := login(t, s, services, "")
	if err := bus.Setup(ctx, hub.js, bus.SetupOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	// Both clusters are accepted and have work; c2's agent has its consumer.
	kv, err := hub.js.KeyValue(ctx, bus.BucketClusters)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"c1", "c2"} {
		if _, err := bus.Publish(ctx, hub.js, bus.WorkSubject(c, "demo", "demo"), workFor(c)); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, bus.AcceptedKey(c), []byte("true")); err != nil {
			t.Fatal(err)
		}
	}
	// The hub made both agents' consumers when it accepted their clusters.
	for _, c := range []string{"c1", "c2"} {
		if _, err := hub.js.CreateOrUpdateConsumer(ctx, bus.StreamWork, bus.AgentConsumerConfig(c)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("agent", func(t *testing.T) {
		// Each identity gets its own deadline: one failure does not starve the next.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a := login(t, s, agent1, bus.InboxPrefix("c1"))
		a.clusterAPI()
		// Allowed: its own newest work, by direct get on its own subject.
		raw, err := bus.LastBySubject(ctx, a.nc, bus.ClusterAPI, bus.StreamWork, bus.WorkSubject("c1", "demo", "demo"))
		if err != nil {
			t.Fatalf("reading its own work: %v", err)
		}
		if e, err := events.DecodeStored(raw); err != nil || e.Data.(*events.WorkData).Cluster != "c1" {
			t.Fatalf("its own work: %v, %v", e, err)
		}
		// Allowed: its own acceptance.
		if ok, err := bus.Accepted(ctx, a.nc, "c1"); err != nil || !ok {
			t.Fatalf("reading its own acceptance: %v, %v", ok, err)
		}
		// Allowed: the consumer the hub made for it: info, fetch, more time,
		// ack (more than one answer to a delivery, which reply permissions
		// alone refuse).
		cons, err := a.js.Consumer(ctx, bus.StreamWork, bus.AgentConsumer("c1"))
		if err != nil {
			t.Fatalf("its own consumer: %v", err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for msg := range batch.Messages() {
			got = append(got, msg.Subject())
			if err := msg.InProgress(); err != nil {
				t.Fatal(err)
			}
			if err := msg.DoubleAck(ctx); err != nil {
				t.Fatalf("acking its own work: %v", err)
			}
		}
		if batch.Error() != nil || len(got) != 1 || got[0] != bus.WorkSubject("c1", "demo", "demo") {
			t.Fatalf("fetched %v (%v), want its one work message", got, batch.Error())
		}
		if info, err := cons.Info(ctx); err != nil || info.NumAckPending != 0 || info.NumPending != 0 {
			t.Fatalf("its consumer after the ack: %+v, %v", info, err)
		}
		// Allowed: its own status and heartbeats, stored.
		if _, err := bus.Publish(ctx, a.js, bus.StatusSubject("c1", "demo", "demo"), statusOf("c1")); err != nil {
			t.Fatalf("publishing its own status: %v", err)
		}
		if _, err := bus.Publish(ctx, a.js, bus.ClusterSubject("c1", "heartbeat"), heartbeatOf("c1")); err != nil {
			t.Fatalf("publishing its own heartbeat: %v", err)
		}
		// Allowed: answering its live queries (the CLI asks, below).
		sub, err := a.nc.Subscribe(bus.QuerySubject("c1"), func(m *nats.Msg) { _ = m.Respond([]byte("answer from c1")) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := a.nc.Flush(); err != nil {
			t.Fatal(err)
		}

		// Refused: another cluster's work, which exists, by direct get.
		if _, err := bus.LastBySubject(short(t), a.nc, bus.ClusterAPI, bus.StreamWork, bus.WorkSubject("c2", "demo", "demo")); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("direct get of c2's work: %v, want no answer", err)
		}
		a.refused("Publish", bus.ClusterAPI+".DIRECT.GET."+bus.StreamWork+"."+bus.WorkSubject("c2", "demo", "demo"))
		// Refused: any stream's info (with a subjects filter it lists every
		// cluster and application).
		for _, stream := range []string{bus.StreamWork, "KV_" + bus.BucketClusters, bus.StreamStatus} {
			if _, err := a.js.Stream(short(t), stream); err == nil {
				t.Errorf("agent of c1 read the info of stream %s", stream)
			}
			a.refused("Publish", bus.ClusterAPI+".STREAM.INFO."+stream)
		}
		// Refused: consuming another cluster's work through its consumer.
		if _, err := a.js.Consumer(short(t), bus.StreamWork, bus.AgentConsumer("c2")); err == nil {
			t.Error("agent of c1 looked up c2's consumer")
		}
		a.refused("Publish", bus.ClusterAPI+".CONSUMER.INFO."+bus.StreamWork+"."+bus.AgentConsumer("c2"))
		if _, err := a.nc.RequestWithContext(short(t), bus.ClusterAPI+".CONSUMER.MSG.NEXT."+bus.StreamWork+"."+bus.AgentConsumer("c2"), []byte(`{"batch":1}`)); err == nil {
			t.Error("agent of c1 pulled from c2's consumer")
		}
		a.refused("Publish", bus.ClusterAPI+".CONSUMER.MSG.NEXT."+bus.StreamWork+"."+bus.AgentConsumer("c2"))
		// Refused: making or changing any consumer, its own included (the
		// hub sets what it may pull and how much at once).
		for _, cfg := range []jetstream.ConsumerConfig{
			bus.AgentConsumerConfig("c2"),
			{Durable: bus.AgentConsumer("c1"), FilterSubject: bus.WorkFilter("c2")},
			{Durable: bus.AgentConsumer("c1"), FilterSubject: bus.WorkFilter("c1"), MaxAckPending: 1000},
			{Durable: bus.AgentConsumer("c1")},
		} {
			if _, err := a.js.CreateOrUpdateConsumer(short(t), bus.StreamWork, cfg); err == nil {
				t.Errorf("agent of c1 made consumer %s of %q", cfg.Durable, cfg.FilterSubject)
			}
			subject := bus.ClusterAPI + ".CONSUMER.CREATE." + bus.StreamWork + "." + cfg.Durable
			if cfg.FilterSubject != "" {
				subject += "." + cfg.FilterSubject
			}
			a.refused("Publish", subject)
		}
		// Refused: subscribing to another cluster's work or to the services' replies.
		for _, subject := range []string{bus.WorkFilter("c2"), "_INBOX.>"} {
			if _, err := a.nc.SubscribeSync(subject); err != nil {
				t.Fatal(err)
			}
			a.refused("Subscription", subject)
		}
		// Refused: another cluster's acceptance, and the object store of every application.
		if _, err := bus.Accepted(short(t), a.nc, "c2"); err == nil {
			t.Error("agent of c1 read c2's acceptance")
		}
		a.refused("Publish", bus.ClusterAPI+".DIRECT.GET.KV_"+bus.BucketClusters+".$KV."+bus.BucketClusters+"."+bus.AcceptedKey("c2"))
		if _, err := a.js.ObjectStore(short(t), bus.ObjectSnapshots); err == nil {
			t.Error("agent of c1 opened the object store")
		}
		a.refused("Publish", bus.ClusterAPI+".STREAM.INFO.OBJ_"+bus.ObjectSnapshots)
		// Refused: speaking for another cluster; nothing is stored.
		if _, err := bus.Publish(short(t), a.js, bus.StatusSubject("c2", "demo", "demo"), statusOf("c2")); err == nil {
			t.Error("agent of c1 published status for c2")
		}
		a.refused("Publish", bus.StatusSubject("c2", "demo", "demo"))
		if _, err := bus.Publish(short(t), a.js, bus.ClusterSubject("c2", "heartbeat"), heartbeatOf("c2")); err == nil {
			t.Error("agent of c1 published a heartbeat for c2")
		}
		a.refused("Publish", bus.ClusterSubject("c2", "heartbeat"))
		if stored(t, hub.js, bus.StreamStatus, bus.StatusSubject("c2", "demo", "demo")) || stored(t, hub.js, bus.StreamClusters, bus.ClusterSubject("c2", "heartbeat")) {
			t.Error("a refused publish for c2 was stored")
		}
		if !stored(t, hub.js, bus.StreamStatus, bus.StatusSubject("c1", "demo", "demo")) || !stored(t, hub.js, bus.StreamClusters, bus.ClusterSubject("c1", "heartbeat")) {
			t.Error("c1's own status or heartbeat was not stored")
		}

		t.Run("cli", func(t *testing.T) {
			// Each identity gets its own deadline: one failure does not starve the next.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := login(t, s, cliUser, bus.CLIInboxPrefix)
			// Refused: a live query straight to an agent (people read
			// through the hub, whose RBAC decides; the dispatcher asks).
			if _, err := c.nc.RequestWithContext(short(t), bus.QuerySubject("c1"), []byte(`{"kind":"Deployment","name":"demo"}`)); err == nil {
				t.Error("the CLI's NATS login queried an agent around the hub's RBAC")
			}
			c.refused("Publish", bus.QuerySubject("c1"))
			d := login(t, s, dispatcher, bus.DispatcherInboxPrefix)
			reply, err := d.nc.RequestWithContext(ctx, bus.QuerySubject("c1"), []byte(`{"kind":"Deployment","name":"demo"}`))
			if err != nil || string(reply.Data) != "answer from c1" {
				t.Fatalf("the dispatcher's live query: %v, %v", reply, err)
			}
			// Refused: reading an agent's or the services' replies.
			for _, subject := range []string{bus.InboxPrefix("c1") + ".>", "_INBOX.>", bus.BotInboxPrefix + ".>"} {
				if _, err := c.nc.SubscribeSync(subject); err != nil {
					t.Fatal(err)
				}
				c.refused("Subscription", subject)
			}
			// Refused: anything else.
			if err := c.nc.Publish(bus.ApprovalSubject("demo", "demo"), []byte("{}")); err != nil {
				t.Fatal(err)
			}
			c.refused("Publish", bus.ApprovalSubject("demo", "demo"))
		})
	})

	t.Run("bot", func(t *testing.T) {
		// Each identity gets its own deadline: one failure does not starve the next.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b := login(t, s, botUser, bus.BotInboxPrefix)
		// Allowed: reading what waits for approval.
		requests, err := b.nc.SubscribeSync(bus.GateSubject("requested", "demo", "demo"))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := hub.nc.Publish(bus.GateSubject("requested", "demo", "demo"), []byte("approve deploy-prod?")); err != nil {
			t.Fatal(err)
		}
		if msg, err := requests.NextMsg(10 * time.Second); err != nil || string(msg.Data) != "approve deploy-prod?" {
			t.Fatalf("approval request: %v, %v", msg, err)
		}
		// Allowed: approving, stored (the stream's ack comes to its own inbox).
		approval := events.New("bot-approval", "/bots/test", events.TypeApproval, "demo/demo", &events.ApprovalData{
			Namespace: "demo", Application: "demo", Release: "demo-v1", Step: "deploy-prod", Decision: "approve", Approver: "alice"})
		if _, err := bus.Publish(ctx, b.js, bus.ApprovalSubject("demo", "demo"), approval); err != nil {
			t.Fatalf("publishing an approval: %v", err)
		}
		// Refused: a gate decision (what the planner acts on), not stored.
		decision := bus.GateSubject("decisions", "demo", "demo")
		if err := b.nc.Publish(decision, []byte(`{"forged":true}`)); err != nil {
			t.Fatal(err)
		}
		b.refused("Publish", decision)
		if stored(t, hub.js, bus.StreamOf(decision), decision) {
			t.Error("a bot's gate decision was stored")
		}
		if !stored(t, hub.js, bus.StreamApprovals, bus.ApprovalSubject("demo", "demo")) {
			t.Error("the bot's approval was not stored")
		}
		// Refused: reading the decisions, or any cluster's status.
		for _, subject := range []string{bus.GateDecisionsFilter, bus.StatusSubject("c1", "demo", "demo")} {
			if _, err := b.nc.SubscribeSync(subject); err != nil {
				t.Fatal(err)
			}
			b.refused("Subscription", subject)
		}
	})

	// Each hub service sets up what it owns and writes only its own events:
	// the gate, which faces the internet, can write neither steps nor work.
	t.Run("services", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		step := events.New("svc-step", events.SourcePlanner, events.TypeApplicationDeleted, "", &events.ApplicationDeletedData{Namespace: "demo", Application: "demo", UID: "u"})
		decision := events.New("svc-decision", events.SourceGate, events.TypeStepApproved, "", &events.StepDecisionData{
			AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "u", Release: "demo-v1", Revision: 1}, Step: "deploy-prod",
			Approvals: []events.Approval{{Approver: "alice", Decision: events.DecisionApprove, Via: "http", Time: time.Now()}}})
		answer := events.New("svc-dispatched", events.SourceDispatcher, events.TypeStepDispatched, "", &events.StepDispatchedData{
			AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "u", Release: "demo-v1", Revision: 1}, Step: "deploy-test", Clusters: []string{"c1"}})
		writes := map[string]struct {
			subject string
			e       *events.Event
		}{
			"step":     {bus.StepSubject("demo", "svc"), step},
			"work":     {bus.WorkSubject("c9", "demo", "svc"), workFor("c9")},
			"answer":   {bus.DispatchSubject("demo", "svc"), answer},
			"decision": {bus.GateSubject("decisions", "demo", "svc"), decision},
		}
		for _, svc := range []struct {
			user  identity
			owner string
			may   []string
		}{
			{planner, bus.OwnerPlanner, []string{"step"}},
			{dispatcher, bus.OwnerDispatcher, []string{"work", "answer"}},
			{gate, bus.OwnerGate, []string{"decision"}},
		} {
			c := login(t, s, svc.user, bus.ServiceInboxPrefix(svc.owner))
			if err := bus.Setup(ctx, c.js, bus.SetupOptions{Memory: true, Owner: svc.owner}); err != nil {
				t.Fatalf("%s setting up what it owns: %v", svc.owner, err)
			}
			for what, w := range writes {
				if slices.Contains(svc.may, what) {
					if _, err := bus.Publish(ctx, c.js, w.subject, w.e); err != nil {
						t.Errorf("%s writing its %s: %v", svc.owner, what, err)
					}
					continue
				}
				if err := c.nc.Publish(w.subject, []byte("{}")); err != nil {
					t.Fatal(err)
				}
				c.refused("Publish", w.subject)
			}
			// Another's streams are not its to change.
			for _, stream := range []string{bus.StreamSteps, bus.StreamWork, bus.StreamGate} {
				if bus.StreamOwner(stream) == svc.owner {
					continue
				}
				if err := c.nc.Publish("$JS.API.STREAM.DELETE."+stream, nil); err != nil {
					t.Fatal(err)
				}
				c.refused("Publish", "$JS.API.STREAM.DELETE."+stream)
			}
			// Nor another's replies.
			for _, other := range []string{bus.OwnerPlanner, bus.OwnerDispatcher, bus.OwnerGate} {
				if other == svc.owner {
					continue
				}
				subject := bus.ServiceInboxPrefix(other) + ".>"
				if _, err := c.nc.SubscribeSync(subject); err != nil {
					t.Fatal(err)
				}
				c.refused("Subscription", subject)
			}
		}
		for _, what := range []string{"step", "work", "answer", "decision"} {
			if w := writes[what]; !stored(t, hub.js, bus.StreamOf(w.subject), w.subject) {
				t.Errorf("the %s its writer published was not stored", what)
			}
		}
	})

	// A cluster named "cli" or "bot" gets an inbox of its own, not theirs.
	t.Run("clusters named like identities", func(t *testing.T) {
		for _, c := range []struct {
			u     identity
			name  string
			other string
		}{{agentCLI, "cli", bus.CLIInboxPrefix}, {agentBot, "bot", bus.BotInboxPrefix}} {
			if bus.InboxPrefix(c.name) == c.other {
				t.Fatalf("cluster %s's inbox is %s's", c.name, c.other)
			}
			a := login(t, s, c.u, bus.InboxPrefix(c.name))
			if _, err := a.nc.SubscribeSync(c.other + ".>"); err != nil {
				t.Fatal(err)
			}
			a.refused("Subscription", c.other+".>")
		}
	})
}
