// Package e2e runs the product page's scenario, and what a user does next,
// against `make up`'s layout: the test bed, a NATS server process, and the
// planner, dispatcher, gate and one agent per cluster as separate processes.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/devenv"
	"github.com/flotilla-dev/flotilla/pkg/events"
	"github.com/flotilla-dev/flotilla/pkg/eventually"
	"github.com/flotilla-dev/flotilla/pkg/gate"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

type suite struct {
	t    *testing.T
	ctx  context.Context
	env  *devenv.Env
	root string
	dir  string
	path string
}

func setup(t *testing.T) *suite {
	return setupWith(t, devenv.Options{})
}

// setupWith is setup with options (directory, binaries, heartbeat and log
// are the suite's).
func setupWith(t *testing.T, o devenv.Options) *suite {
	return setupFor(t, o, 8*time.Minute)
}

// setupFor is setupWith for a suite that runs for up to d.
func setupFor(t *testing.T, o devenv.Options, d time.Duration) *suite {
	if testing.Short() {
		t.Skip("runs the whole product")
	}
	root, err := testbed.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	dir := t.TempDir()
	bin := filepath.Join(root, "bin")
	tbBin := os.Getenv("FLOTILLA_TESTBED_BIN")
	if tbBin == "" {
		tbBin = filepath.Join(bin, "testbed")
	}
	o.Dir, o.BinDir, o.TestbedBinDir, o.Heartbeat = dir, bin, tbBin, 500*time.Millisecond
	o.Log = func(f string, a ...any) { t.Logf(f, a...) }
	env, err := devenv.Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"planner", "dispatcher", "gate", "agent-" + env.Clusters[0], "agent-" + env.Clusters[1]} {
				data, _ := os.ReadFile(filepath.Join(dir, "logs", name+".log"))
				lines := strings.Split(string(data), "\n")
				t.Logf("--- %s (last lines)\n%s", name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
		env.Down()
	})
	return &suite{t: t, ctx: ctx, env: env, root: root, dir: dir, path: bin + ":" + tbBin + ":" + os.Getenv("PATH")}
}

// run runs a command as a user would after `source .flotilla/env`.
func (s *suite) run(name string, args ...string) (string, error) {
	return s.runAs("cli", name, args...)
}

// runAs is run with the NATS login of user.
func (s *suite) runAs(user, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(s.ctx, name, args...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(s.dir, "kubeconfig", "hub"), "PATH="+s.path, "NATS_URL="+s.env.NATSURL, "NATS_CREDS="+s.env.Creds(user), "NATS_CA="+s.env.TLS.CA, "JAEGER_QUERY_URL="+s.env.JaegerURL)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustAs is must with the NATS login of user.
func (s *suite) mustAs(user, name string, args ...string) string {
	s.t.Helper()
	out, err := s.runAs(user, name, args...)
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (s *suite) must(name string, args ...string) string {
	s.t.Helper()
	out, err := s.run(name, args...)
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// eventually retries a command until its output matches re.
func (s *suite) eventually(re string, name string, args ...string) string {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := s.run(name, args...)
		if rx.MatchString(out) {
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s %s never matched %q; last output:\n%s", name, strings.Join(args, " "), re, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func matchLines(t *testing.T, out string, res ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(res) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(res), out)
	}
	for i, re := range res {
		if !regexp.MustCompile("^" + re + "$").MatchString(lines[i]) {
			t.Errorf("line %d = %q, want %s", i+1, lines[i], re)
		}
	}
}

func TestSeedScenarioAndWhatComesNext(t *testing.T) {
	s := setup(t)
	testC, prodC := s.env.Clusters[0], s.env.Clusters[1]
	kubectl := func(args ...string) string { t.Helper(); return s.must("kubectl", args...) }
	flotilla := func(args ...string) (string, error) {
		return s.run("kubectl", append([]string{"flotilla"}, args...)...)
	}
	// The page's steps 1-8.
	kubectl("create", "namespace", "demo")
	kubectl("apply", "-f", "examples/seed/app-meta.yaml")
	matchLines(t, kubectl("get", "managedclusters"),
		`NAME +HUB ACCEPTED   MANAGED CLUSTER URLS   JOINED   AVAILABLE   AGE`,
		`managedcluster-c[a-z0-9]{6} +true +True +True +\w+`,
		`managedcluster-c[a-z0-9]{6} +true +True +True +\w+`)
	policies := strings.NewReplacer("<clusterid1>", testC, "<clusterid2>", prodC).Replace(readFile(t, filepath.Join(s.root, "examples/seed/policy-topology.yaml")))
	kubectl("apply", "-f", writeFile(t, s.dir, "policy-topology.yaml", policies))
	kubectl("apply", "-f", "examples/seed/workflow.yaml")
	applied := time.Now()
	kubectl("apply", "-f", "examples/seed/app.yaml")

	// 9: waiting for approval, as the page prints it.
	out := s.eventually(`workflowSuspending +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	matchLines(t, out, `NAME   COMPONENT   TYPE          PHASE                HEALTHY   STATUS   AGE`,
		`demo   demo        ref-objects   workflowSuspending   true               \w+`)
	// 10: test runs it, production does not.
	out = s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", testC)
	t.Logf("apply app.yaml -> test cluster 1/1: %v", time.Since(applied).Round(10*time.Millisecond))
	matchLines(t, out, "Run on ManagedCluster "+testC, `NAME   READY   UP-TO-DATE   AVAILABLE   AGE`, `demo   1/1     1            1           \w+`)
	out, err := flotilla("get", "deployment", "demo", "-n", "demo", "-m", prodC)
	if err == nil {
		t.Error("get of production's absent Deployment exited 0")
	}
	matchLines(t, out, "Run on ManagedCluster "+prodC, `Error from server \(NotFound\): deployments.apps "demo" not found`)

	// 11-12: resume, production runs it.
	resumed := time.Now()
	matchLines(t, s.must("kubectl", "amc", "workflow", "resume", "demo", "-n", "demo"), `Successfully resume workflow: demo`)
	s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC)
	t.Logf("resume -> production 1/1: %v", time.Since(resumed).Round(10*time.Millisecond))
	// Each agent's NATS user reaches only its own cluster's work and
	// subjects, now that both clusters have work to reach for.
	s.agentIsolation(t, testC, prodC)
	// A person reads clusters only as far as the hub's RBAC lets them.
	s.liveReadsFollowHubRBAC(t, prodC)
	s.transport(t)
	s.agentIsolation(t, prodC, testC)
	s.eventually(`demo +demo +ref-objects +running +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	s.handCarried(t, prodC)

	// Someone scales the test cluster's Deployment by hand: its agent puts it back.
	testKubeconfig := filepath.Join(s.dir, "kubeconfig", testC)
	kubectl("--kubeconfig", testKubeconfig, "-n", "demo", "scale", "deployment/demo", "--replicas=3")
	s.eventually(`^1$`, "kubectl", "--kubeconfig", testKubeconfig, "-n", "demo", "get", "deployment/demo", "-o", "jsonpath={.spec.replicas}")

	// The release is one trace in Jaeger, across the four services and both clusters.
	approver := kubectl("get", "app", "demo", "-n", "demo", "-o", "jsonpath={.status.workflow.steps[1].approvals[0].approver}")
	s.checkSeedTrace(t, testC, prodC, approver)

	imageIn := func(cluster string) string {
		out, err := flotilla("get", "deployment", "demo", "-n", "demo", "-m", cluster, "-o", "json")
		if err != nil {
			return "absent"
		}
		m := regexp.MustCompile(`"image": "([^"]+)"`).FindStringSubmatch(out)
		if m == nil {
			return "?"
		}
		return m[1]
	}

	// Editing the hub's Deployment without a new publishVersion rolls
	// nothing out, even once the planner has reconciled the Application
	// after the edit: an edit of its spec (its generation moves, its
	// publishVersion does not) makes it, and the status it then writes says
	// which generation it saw and which release it runs.
	kubectl("-n", "demo", "set", "image", "deployment/demo", "demo=registry.cn-hangzhou.aliyuncs.com/acs/rollouts-demo:blue")
	before := kubectl("get", "app", "demo", "-n", "demo", "-o", "jsonpath={.metadata.generation}")
	kubectl("-n", "demo", "patch", "app", "demo", "--type=merge", "-p", `{"spec":{"policies":[]}}`)
	generation := kubectl("get", "app", "demo", "-n", "demo", "-o", "jsonpath={.metadata.generation}")
	if generation == before {
		t.Fatalf("the Application's spec edit left its generation at %s", generation)
	}
	seen := s.eventually(`^`+generation+` `, "kubectl", "get", "app", "demo", "-n", "demo", "-o", "jsonpath={.status.observedGeneration} {.status.latestRevision.name}")
	if rev := strings.Fields(seen)[1]; rev != "demo-v1" {
		t.Errorf("an edit without a new publishVersion cut release %s", rev)
	}
	if img := imageIn(testC); !strings.HasSuffix(img, ":red") {
		t.Errorf("an edit without a new publishVersion reached the test cluster: %s", img)
	}

	// Release 2: test gets :blue, production keeps :red until approved (over the webhook).
	kubectl("-n", "demo", "annotate", "--overwrite", "app", "demo", "app.oam.dev/publishVersion=version2")
	s.eventually(`workflowSuspending`, "kubectl", "get", "app", "demo", "-n", "demo")
	s.eventually(`rollouts-demo:blue`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", testC, "-o", "yaml")
	if img := imageIn(prodC); !strings.HasSuffix(img, ":red") {
		t.Errorf("production changed before approval: %s", img)
	}
	s.webhookRefusals(t)
	if code, body := s.webhook(t, "version2", "deploy-prod", "approve", "alice", time.Now(), ""); code != http.StatusAccepted {
		t.Fatalf("webhook approval: %d %s", code, body)
	}
	s.eventually(`rollouts-demo:blue`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC, "-o", "yaml")
	approvals := kubectl("get", "app", "demo", "-n", "demo", "-o", "jsonpath={.status.workflow.steps[1].approvals[0]}")
	if !strings.Contains(approvals, `"approver":"alice"`) || !strings.Contains(approvals, `"via":"http"`) {
		t.Errorf("approval not recorded on the step: %s", approvals)
	}

	// Release 3 with production's agent down: the hub shows it unavailable;
	// back up, it completes the release (approved over NATS, signed).
	if err := s.env.Stop("agent-" + prodC); err != nil {
		t.Fatal(err)
	}
	s.eventually(prodC+` +true +True +Unknown`, "kubectl", "get", "managedclusters")
	kubectl("-n", "demo", "set", "image", "deployment/demo", "demo=registry.cn-hangzhou.aliyuncs.com/acs/rollouts-demo:green")
	kubectl("-n", "demo", "annotate", "--overwrite", "app", "demo", "app.oam.dev/publishVersion=version3")
	s.eventually(`workflowSuspending`, "kubectl", "get", "app", "demo", "-n", "demo")
	s.natsApprove(t, "version3", "deploy-prod", "bob")
	s.eventually(`runningWorkflow`, "kubectl", "get", "app", "demo", "-n", "demo")
	if _, err := s.env.Restart("agent-" + prodC); err != nil {
		t.Fatal(err)
	}
	s.eventually(`rollouts-demo:green`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC, "-o", "yaml")
	s.eventually(`demo +demo +ref-objects +running +true`, "kubectl", "get", "app", "demo", "-n", "demo")

	// Roll back to release 2 (the newest earlier one that succeeded), through the same workflow.
	matchLines(t, s.must("kubectl", "flotilla", "workflow", "rollback", "demo", "-n", "demo"), `Successfully rollback workflow: demo`)
	s.eventually(`rollouts-demo:blue`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", testC, "-o", "yaml")
	s.eventually(`workflowSuspending`, "kubectl", "get", "app", "demo", "-n", "demo")
	if img := imageIn(prodC); !strings.HasSuffix(img, ":green") {
		t.Errorf("production rolled back before approval: %s", img)
	}
	matchLines(t, s.must("kubectl", "flotilla", "workflow", "resume", "demo", "-n", "demo"), `Successfully resume workflow: demo`)
	s.eventually(`rollouts-demo:blue`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC, "-o", "yaml")
	if rev := kubectl("get", "app", "demo", "-n", "demo", "-o", "jsonpath={.status.latestRevision.name}"); rev != "demo-v4" {
		t.Errorf("rollback release %q, want demo-v4", rev)
	}

	// A Secret rolled out leaves its value in no span.
	s.checkSecretStaysOut(t, prodC)
	// A release too large to travel inline still reaches the agents.
	s.checkLargeRelease(t, testC, prodC)

	// Deleting the Application removes the Deployment from both clusters.
	kubectl("delete", "app", "demo", "-n", "demo", "--timeout=60s")
	for _, c := range []string{testC, prodC} {
		s.eventually(`NotFound`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", c)
	}
	s.checkMetrics(t, testC, prodC)

	// kill -9 every hub service: the supervisor starts each again, as a
	// kubelet would, and the next release goes through them.
	for _, name := range []string{"planner", "dispatcher", "gate"} {
		killed, err := s.env.Kill(name)
		if err != nil {
			t.Fatal(err)
		}
		eventually.True(t, 30*time.Second, name+" started again", func() (bool, error) {
			p := s.env.Process(name)
			return p != killed && !p.Exited() && s.env.Restarts(name) == 1, nil
		})
	}

	kubectl("apply", "-f", "examples/seed/app.yaml")
	s.eventually(`workflowSuspending +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	matchLines(t, s.must("kubectl", "amc", "workflow", "resume", "demo", "-n", "demo"), `Successfully resume workflow: demo`)
	s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", prodC)
	s.eventually(`demo +demo +ref-objects +running +true`, "kubectl", "get", "app", "demo", "-n", "demo")
	if died := s.env.Died(); len(died) > 0 {
		t.Errorf("processes died: %v", died)
	}
}

// transport checks NATS and the webhook refuse to talk in clear.
func (s *suite) transport(t *testing.T) {
	t.Helper()
	plain := strings.Replace(s.env.NATSURL, "tls://", "nats://", 1)
	if nc, err := nats.Connect(plain, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Errorf("NATS took a connection without TLS at %s", plain)
	}
	clear := strings.Replace(s.env.GateURL, "https://", "http://", 1)
	if resp, err := http.Post(clear+"/v1/approvals", "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("the webhook answered %d over plain HTTP, want the TLS server's 400", resp.StatusCode)
		}
	}
}

// releaseOf is the release the scenario cuts for a publishVersion
// (version<N> is release demo-v<N>), as the approval request names it.
func releaseOf(publishVersion string) string {
	return "demo-v" + strings.TrimPrefix(publishVersion, "version")
}

// https is a client that trusts the environment's CA (the webhook serves
// only HTTPS).
func (s *suite) https(t *testing.T) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(readFile(t, s.env.TLS.CA))) {
		t.Fatalf("no certificate in %s", s.env.TLS.CA)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}, Timeout: 30 * time.Second}
}

// webhook sends an approval as a bot would.
func (s *suite) webhook(t *testing.T, publishVersion, step, decision, approver string, at time.Time, id string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(events.ApprovalData{Namespace: "demo", Application: "demo", Release: releaseOf(publishVersion), PublishVersion: publishVersion, Step: step, Decision: decision, Approver: approver})
	return s.post(t, body, at, id, "")
}

func (s *suite) post(t *testing.T, body []byte, at time.Time, id, badSig string) (int, string) {
	t.Helper()
	secret := strings.TrimSpace(readFile(t, filepath.Join(s.dir, "bot-secret")))
	if id == "" {
		id = fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	req, _ := http.NewRequestWithContext(s.ctx, http.MethodPost, s.env.GateURL+"/v1/approvals", bytes.NewReader(body))
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-type": events.TypeApproval, "ce-source": "/bots/e2e", "ce-id": id,
		"Content-Type": "application/json", gate.HTTPHeaderKeyID: devenv.BotKeyID, gate.HTTPHeaderTimestamp: ts,
		gate.HTTPHeaderSignature: gate.SignHTTP(secret, ts, id, body)} {
		req.Header.Set(k, v)
	}
	if badSig != "" {
		req.Header.Set(gate.HTTPHeaderSignature, badSig)
	}
	resp, err := s.https(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// webhookRefusals: every bad call is refused with its code, and nothing moves.
func (s *suite) webhookRefusals(t *testing.T) {
	good, _ := json.Marshal(events.ApprovalData{Namespace: "demo", Application: "demo", Release: "demo-v2", PublishVersion: "version2", Step: "deploy-prod", Decision: "approve", Approver: "mallory"})
	cases := []struct {
		name string
		code int
		send func() (int, string)
	}{
		{"bad signature", 401, func() (int, string) { return s.post(t, good, time.Now(), "", "v1=00") }},
		{"expired timestamp", 401, func() (int, string) { return s.post(t, good, time.Now().Add(-10*time.Minute), "", "") }},
		{"stale release", 409, func() (int, string) {
			return s.webhook(t, "version1", "deploy-prod", "approve", "mallory", time.Now(), "")
		}},
		{"step that does not wait", 409, func() (int, string) {
			return s.webhook(t, "version2", "deploy-test", "approve", "mallory", time.Now(), "")
		}},
		{"unknown application", 404, func() (int, string) {
			body, _ := json.Marshal(events.ApprovalData{Namespace: "demo", Application: "nope", Release: "nope-v1", Step: "s", Decision: "approve", Approver: "m"})
			return s.post(t, body, time.Now(), "", "")
		}},
		{"malformed JSON", 422, func() (int, string) { return s.post(t, []byte(`{"namespace":`), time.Now(), "", "") }},
		{"missing fields", 422, func() (int, string) {
			return s.post(t, []byte(`{"namespace":"demo","decision":"approve"}`), time.Now(), "", "")
		}},
		{"oversized", 413, func() (int, string) { return s.post(t, bytes.Repeat([]byte("x"), gate.MaxBody+1), time.Now(), "", "") }},
	}
	for _, c := range cases {
		if code, body := c.send(); code != c.code || !strings.Contains(body, `"reason"`) {
			t.Errorf("%s: %d %s, want %d with a reason", c.name, code, body, c.code)
		}
	}
	out := s.must("kubectl", "get", "app", "demo", "-n", "demo")
	if !strings.Contains(out, "workflowSuspending") {
		t.Errorf("a refused approval moved the workflow:\n%s", out)
	}
}

// natsApprove publishes a signed approval event as a chat bot on NATS would.
func (s *suite) natsApprove(t *testing.T, publishVersion, step, approver string) {
	t.Helper()
	seed := strings.TrimSpace(readFile(t, filepath.Join(s.dir, "bot.nk")))
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	// The bot logs in to NATS with a credential for the same key, where
	// it may publish approvals only.
	nc, err := nats.Connect(s.env.NATSURL, nats.UserCredentials(s.env.Creds("bot")), nats.RootCAs(s.env.TLS.CA))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e := events.New(fmt.Sprintf("nats-e2e-%d", time.Now().UnixNano()), "/bots/e2e", events.TypeApproval, "demo/demo",
		&events.ApprovalData{Namespace: "demo", Application: "demo", Release: releaseOf(publishVersion), PublishVersion: publishVersion, Step: step, Decision: "approve", Approver: approver})
	msg, err := events.Encode(bus.ApprovalSubject("demo", "demo"), e)
	if err != nil {
		t.Fatal(err)
	}
	if err := gate.SignNATS(msg, devenv.NATSBotKeyID, kp); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// refusals records what the NATS server refused a connection.
type refusals struct {
	mu   sync.Mutex
	errs []error
}

func (r *refusals) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

// wait waits until the server has refused op ("Publish") on subject: its
// own answer, not an absence or a timeout.
func (r *refusals) wait(t *testing.T, who, op, subject string) {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	eventually.True(t, 20*time.Second, who+": "+want, func() (bool, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, err := range r.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return true, nil
			}
		}
		return false, fmt.Errorf("refusals so far: %v", r.errs)
	})
}

// agentIsolation logs in as cluster mine's agent, while other's newest work
// is in the stream, and checks it can read its own, and that the server
// refuses it other's work, a consumer of it, and speaking for other.
func (s *suite) agentIsolation(t *testing.T, mine, other string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	// The services' view: other's work is there to be refused.
	snc, err := nats.Connect(s.env.NATSURL, nats.UserCredentials(s.env.Creds("admin")), nats.RootCAs(s.env.TLS.CA))
	if err != nil {
		t.Fatal(err)
	}
	defer snc.Close()
	sjs, err := jetstream.New(snc)
	if err != nil {
		t.Fatal(err)
	}
	swork, err := sjs.Stream(ctx, bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := swork.GetLastMsgForSubject(ctx, bus.WorkSubject(other, "demo", "demo")); err != nil {
		t.Fatalf("%s has no work yet (%v): a refusal would prove nothing", other, err)
	}

	who := "agent of " + mine
	refused := &refusals{}
	auth, err := s.env.AgentLogin(mine)
	if err != nil {
		t.Fatal(err)
	}
	// Where its agent logs in: the hub's NATS, or its site's leaf node.
	nc, err := nats.Connect(s.env.AgentNATSURL(mine), auth, nats.RootCAs(s.env.TLS.CA), nats.CustomInboxPrefix(bus.InboxPrefix(mine)), nats.ErrorHandler(refused.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithAPIPrefix(nc, bus.ClusterAPI)
	if err != nil {
		t.Fatal(err)
	}
	// Its own newest work, by direct get on its own subject: the only way
	// its user has (no stream info, which would list every subject).
	if _, err := bus.LastBySubject(ctx, nc, bus.ClusterAPI, bus.StreamWork, bus.WorkSubject(mine, "demo", "demo")); err != nil {
		t.Errorf("%s cannot read its own work: %v", who, err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	c1, cancel1 := short()
	defer cancel1()
	if _, err := bus.LastBySubject(c1, nc, bus.ClusterAPI, bus.StreamWork, bus.WorkSubject(other, "demo", "demo")); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("%s reading %s's work: %v, want the server's refusal", who, other, err)
	}
	refused.wait(t, who, "Publish", bus.ClusterAPI+".DIRECT.GET."+bus.StreamWork+"."+bus.WorkSubject(other, "demo", "demo"))
	// Listing the work stream's subjects would name every cluster and application.
	ci, canceli := short()
	defer canceli()
	if _, err := js.Stream(ci, bus.StreamWork); err == nil {
		t.Errorf("%s read the work stream's info", who)
	}
	refused.wait(t, who, "Publish", bus.ClusterAPI+".STREAM.INFO."+bus.StreamWork)
	// Its consumer is the hub's to make: it may neither make another's nor remake its own.
	c2, cancel2 := short()
	defer cancel2()
	if _, err := js.CreateOrUpdateConsumer(c2, bus.StreamWork, jetstream.ConsumerConfig{Durable: bus.AgentConsumer(other), FilterSubject: bus.WorkFilter(other)}); err == nil {
		t.Errorf("%s created a consumer of %s's work", who, other)
	}
	refused.wait(t, who, "Publish", bus.ClusterAPI+".CONSUMER.CREATE."+bus.StreamWork+"."+bus.AgentConsumer(other)+"."+bus.WorkFilter(other))
	co, canceln := short()
	defer canceln()
	if _, err := js.CreateOrUpdateConsumer(co, bus.StreamWork, jetstream.ConsumerConfig{Durable: bus.AgentConsumer(mine), FilterSubject: bus.WorkFilter(mine), MaxAckPending: 1000}); err == nil {
		t.Errorf("%s reconfigured its own consumer", who)
	}
	refused.wait(t, who, "Publish", bus.ClusterAPI+".CONSUMER.CREATE."+bus.StreamWork+"."+bus.AgentConsumer(mine)+"."+bus.WorkFilter(mine))
	c3, cancel3 := short()
	defer cancel3()
	st := events.New("forged", events.SourceAgent(other), events.TypeClusterStatus, "", &events.ClusterStatusData{
		AppRef: events.AppRef{Namespace: "demo", Application: "demo", UID: "x", Release: "demo-v1", Revision: 1}, Cluster: other, Phase: events.ClusterApplied})
	if _, err := bus.Publish(c3, js, bus.StatusSubject(other, "demo", "demo"), st); err == nil {
		t.Errorf("%s published status for %s", who, other)
	}
	refused.wait(t, who, "Publish", bus.StatusSubject(other, "demo", "demo"))
}
