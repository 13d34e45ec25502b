package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-dev/flotilla/pkg/apply"
	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/devenv"
	"github.com/flotilla-dev/flotilla/pkg/events"
)

// The fault suite: releases of several applications through the seed's
// two-step workflow (deploy-test, then deploy-prod once approved), over a
// 3-node NATS cluster with two replicas of each hub service, while a
// driver kills -9 a random service replica or agent every few seconds,
// kills one NATS node a third of the way through and the whole NATS
// cluster two thirds of the way (the supervisor starts each again, as a
// kubelet would). One release is rejected. At the end every release is
// where its inputs put it, each step of each release started at most once
// (exactly once where it ran), each cluster applied each release once
// (again only after its agent was killed holding the work unacked),
// nothing of a superseded release is left in a cluster, and no service
// logged an error.
//
// make test runs 10 releases; make chaos runs 50, three times
// (FLOTILLA_CHAOS_RELEASES, FLOTILLA_CHAOS_SEED).
func TestChaos(t *testing.T) {
	releases := 10
	if v := os.Getenv("FLOTILLA_CHAOS_RELEASES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 {
			t.Fatalf("FLOTILLA_CHAOS_RELEASES=%q: want a number of at least 4", v)
		}
		releases = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("FLOTILLA_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FLOTILLA_CHAOS_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("chaos: %d releases, seed %d (FLOTILLA_CHAOS_SEED to run it again)", releases, seed)
	s := setupFor(t, devenv.Options{Replicas: 2, NATSNodes: 3}, time.Duration(releases)*30*time.Second+5*time.Minute)
	// A failed run's logs are kept (the suite's directory goes with it).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		keep := filepath.Join(s.root, ".flotilla", "chaos-logs", time.Now().UTC().Format("20060102T150405"))
		if err := os.MkdirAll(filepath.Dir(keep), 0o755); err == nil {
			if err := os.CopyFS(keep, os.DirFS(filepath.Join(s.dir, "logs"))); err == nil {
				t.Logf("chaos: the run's logs are kept in %s", keep)
			}
		}
	})
	c := &chaos{s: s, t: t, ns: "chaos", rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		apps: []string{"web", "api", "jobs"}, kills: map[string]int{}}
	c.prepare()

	// The releases, spread over the applications, each application's in
	// turn; the second of "api" is rejected.
	plan := map[string][]int{}
	for i := range releases {
		app := c.apps[i%len(c.apps)]
		plan[app] = append(plan[app], len(plan[app])+1)
	}
	c.rejected = map[string]int{"api": 2}

	done := make(chan struct{})
	var progress sync.WaitGroup
	c.total = releases
	progress.Add(1)
	go func() {
		defer progress.Done()
		c.kill(done)
	}()
	var apps sync.WaitGroup
	errs := make(chan error, len(c.apps))
	for _, app := range c.apps {
		apps.Add(1)
		go func() {
			defer apps.Done()
			for _, k := range plan[app] {
				if err := c.release(app, k); err != nil {
					errs <- fmt.Errorf("%s release %d: %w", app, k, err)
					return
				}
			}
		}()
	}
	apps.Wait()
	close(done)
	progress.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	c.settle()
	c.check(plan)
}

type chaos struct {
	s    *suite
	t    *testing.T
	ns   string
	rng  *rand.Rand
	apps []string
	// rejected is the release of each application that is rejected.
	rejected map[string]int

	mu        sync.Mutex
	completed int
	total     int
	kills     map[string]int
	natsKills int
	// took is each release's time from its cut to where it ends.
	took []time.Duration
	// natsRestarted: once the whole NATS cluster.
	natsRestarted bool
}

// victims are the processes the driver kills at random.
func (c *chaos) victims() []string {
	v := []string{"planner", "planner-2", "dispatcher", "dispatcher-2", "gate", "gate-2"}
	for _, cl := range c.s.env.Clusters {
		v = append(v, "agent-"+cl)
	}
	return v
}

var natsNodes = []string{"nats-server", "nats-server-2", "nats-server-3"}

// prepare makes the namespace, the topology policies, the workflow and each
// application's Deployment on the hub.
func (c *chaos) prepare() {
	t, s := c.t, c.s
	testC, prodC := s.env.Clusters[0], s.env.Clusters[1]
	s.must("kubectl", "create", "namespace", c.ns)
	inNS := strings.NewReplacer("namespace: demo", "namespace: "+c.ns)
	policies := strings.NewReplacer("<clusterid1>", testC, "<clusterid2>", prodC).Replace(inNS.Replace(readFile(t, filepath.Join(s.root, "examples/seed/policy-topology.yaml"))))
	s.must("kubectl", "apply", "-f", writeFile(t, s.dir, "chaos-policies.yaml", policies))
	s.must("kubectl", "apply", "-f", writeFile(t, s.dir, "chaos-workflow.yaml", inNS.Replace(readFile(t, filepath.Join(s.root, "examples/seed/workflow.yaml")))))
	meta := readFile(t, filepath.Join(s.root, "examples/seed/app-meta.yaml"))
	for _, app := range c.apps {
		d := strings.NewReplacer("namespace: demo", "namespace: "+c.ns, "name: demo", "name: "+app, "app: demo", "app: "+app).Replace(meta)
		s.must("kubectl", "apply", "-f", writeFile(t, s.dir, "chaos-"+app+"-meta.yaml", d))
	}
}

// release k of app: a ConfigMap of its own (so that the next release
// prunes it), the Application at publishVersion v<k>, deploy-test, then
// deploy-prod approved (or rejected).
func (c *chaos) release(app string, k int) error {
	s := c.s
	began := time.Now()
	cfg := fmt.Sprintf("%s-cfg-%d", app, k)
	if _, err := c.retry(fmt.Sprintf("create %s", cfg), func() (string, error) {
		out, err := s.run("kubectl", "create", "configmap", cfg, "-n", c.ns, "--from-literal=release="+strconv.Itoa(k))
		if err != nil && strings.Contains(out, "AlreadyExists") {
			return out, nil
		}
		return out, err
	}); err != nil {
		return err
	}
	doc := fmt.Sprintf(`apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: %[1]s
  namespace: %[2]s
  annotations:
    app.oam.dev/publishVersion: v%[3]d
spec:
  components:
    - name: %[1]s
      type: ref-objects
      properties:
        objects:
          - apiVersion: apps/v1
            kind: Deployment
            name: %[1]s
          - apiVersion: v1
            kind: ConfigMap
            name: %[4]s
  workflow:
    ref: deploy-demo
`, app, c.ns, k, cfg)
	file := writeFile(c.t, s.dir, fmt.Sprintf("chaos-%s-%d.yaml", app, k), doc)
	if _, err := c.retry("apply "+app, func() (string, error) { return s.run("kubectl", "apply", "-f", file) }); err != nil {
		return err
	}
	version := fmt.Sprintf("v%d", k)
	if err := c.await(app, version, "deploy-prod waiting", func(st appState) bool {
		return st.phase == "workflowSuspending" && st.suspend
	}); err != nil {
		return err
	}
	verb, want := "resume", "running"
	if c.rejected[app] == k {
		verb, want = "terminate", "workflowTerminated"
	}
	// The decision, again until the application shows it: the gate or the
	// planner may be the replica just killed.
	deadline := time.Now().Add(releasePatience)
	for {
		st, err := c.state(app)
		if err == nil && st.version == version && st.phase == want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s of %s %s: the application is %+v (%v) after %v:\n%s", verb, app, version, st, err, releasePatience, c.describe(app))
		}
		if err == nil && st.version == version && st.phase == "workflowSuspending" {
			out, err := s.run("kubectl", "flotilla", "workflow", verb, app, "-n", c.ns, "--timeout", "15s", "--reason", "chaos")
			if err != nil && !strings.Contains(out, "already decided") {
				c.t.Logf("%s %s %s (tried again): %s", verb, app, version, strings.TrimSpace(out))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.mu.Lock()
	c.completed++
	c.took = append(c.took, time.Since(began))
	c.mu.Unlock()
	return nil
}

// retry runs a hub command until it succeeds (the hub's API server is
// never killed; a command may still meet a slow admission).
func (c *chaos) retry(what string, run func() (string, error)) (string, error) {
	var out string
	var err error
	for range 10 {
		if out, err = run(); err == nil {
			return out, nil
		}
		time.Sleep(time.Second)
	}
	return out, fmt.Errorf("%s: %w: %s", what, err, out)
}

type appState struct {
	version, phase string
	suspend        bool
}

func (c *chaos) state(app string) (appState, error) {
	out, err := c.s.run("kubectl", "get", "app", app, "-n", c.ns, "-o", "json")
	if err != nil {
		return appState{}, fmt.Errorf("%w: %s", err, out)
	}
	var a struct {
		Status struct {
			Phase          string `json:"status"`
			LatestRevision *struct {
				PublishVersion string `json:"publishVersion"`
			} `json:"latestRevision"`
			Workflow *struct {
				Suspend bool `json:"suspend"`
			} `json:"workflow"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		return appState{}, err
	}
	st := appState{phase: a.Status.Phase}
	if a.Status.LatestRevision != nil {
		st.version = a.Status.LatestRevision.PublishVersion
	}
	if a.Status.Workflow != nil {
		st.suspend = a.Status.Workflow.Suspend
	}
	return st, nil
}

// releasePatience bounds each wait of a release: with both replicas of a
// service killed in a row, each waits out a crash-loop back-off (up to
// 30 s) and the messages it held their ack wait (30 s).
const releasePatience = 5 * time.Minute

// describe is the application's workflow status, for a failure.
func (c *chaos) describe(app string) string {
	out, _ := c.s.run("kubectl", "get", "app", app, "-n", c.ns, "-o", "jsonpath={.status.workflow}")
	return out
}

func (c *chaos) await(app, version, what string, ok func(appState) bool) error {
	deadline := time.Now().Add(releasePatience)
	for {
		st, err := c.state(app)
		if err == nil && st.version == version && ok(st) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s not %s after %v: %+v (%v):\n%s", app, version, what, releasePatience, st, err, c.describe(app))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// kill is the driver: a random victim every 2-5 s; one NATS node a third
// of the way through, the whole NATS cluster two thirds of the way.
func (c *chaos) kill(done <-chan struct{}) {
	victims := c.victims()
	nodeKilled := false
	for {
		select {
		case <-done:
			return
		case <-time.After(2*time.Second + time.Duration(c.rng.IntN(3000))*time.Millisecond):
		}
		c.mu.Lock()
		completed := c.completed
		c.mu.Unlock()
		switch {
		case !nodeKilled && completed*3 >= c.total:
			nodeKilled = true
			node := natsNodes[1+c.rng.IntN(2)]
			c.killOne(node)
			c.mu.Lock()
			c.natsKills++
			c.mu.Unlock()
		case nodeKilled && !c.natsRestarted && completed*3 >= 2*c.total:
			c.t.Logf("chaos: restarting the whole NATS cluster after %d releases", completed)
			for _, n := range natsNodes {
				c.killOne(n)
			}
			c.mu.Lock()
			c.natsRestarted, c.natsKills = true, c.natsKills+len(natsNodes)
			c.mu.Unlock()
		default:
			c.killOne(victims[c.rng.IntN(len(victims))])
		}
	}
}

// killOne kills -9 a running process (one the supervisor has yet to start
// again is left alone).
func (c *chaos) killOne(name string) {
	p := c.s.env.Process(name)
	if p == nil || p.Exited() {
		return
	}
	if _, err := c.s.env.Kill(name); err != nil {
		c.t.Errorf("kill %s: %v", name, err)
		return
	}
	c.mu.Lock()
	c.kills[name]++
	c.mu.Unlock()
}

// settle waits until every process killed runs again.
func (c *chaos) settle() {
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range append(c.victims(), natsNodes...) {
		for {
			p := c.s.env.Process(name)
			if p != nil && !p.Exited() {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("%s was not started again", name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// check counts what happened and compares it with what the inputs dictate.
func (c *chaos) check(plan map[string][]int) {
	t, s := c.t, c.s
	testC, prodC := s.env.Clusters[0], s.env.Clusters[1]

	// Each step of each release started once where it ran, never twice.
	started := c.startedSteps()
	applies := map[string]map[string]int{}
	for _, cl := range s.env.Clusters {
		applies[cl] = c.agentApplies(cl)
	}
	var rows []string
	extra := map[string]int{}
	for _, app := range c.apps {
		for _, k := range plan[app] {
			release := fmt.Sprintf("%s-v%d", app, k)
			wantProd := 1
			if c.rejected[app] == k {
				wantProd = 0
			}
			if got := started[release+"/deploy-test"]; got != 1 {
				t.Errorf("%s: deploy-test started %d times, want once", release, got)
			}
			if got := started[release+"/deploy-prod"]; got != wantProd {
				t.Errorf("%s: deploy-prod started %d times, want %d", release, got, wantProd)
			}
			for cl, want := range map[string]int{testC: 1, prodC: wantProd} {
				got := applies[cl][release]
				switch {
				case got < want || (want == 0 && got > 0):
					t.Errorf("%s: %s applied it %d times, want %d", release, cl, got, want)
				case got > want:
					extra[cl] += got - want
				}
			}
			rows = append(rows, fmt.Sprintf("%-8s started test %d prod %d, applied test %d prod %d", release,
				started[release+"/deploy-test"], started[release+"/deploy-prod"], applies[testC][release], applies[prodC][release]))
		}
	}
	// An agent applies a release again only when it was killed holding the
	// work unacked (the stream delivers it again): never more often.
	for cl, n := range extra {
		if kills := c.kills["agent-"+cl]; n > kills {
			t.Errorf("%s applied releases %d extra times, with its agent killed only %d times", cl, n, kills)
		}
	}

	// Nothing of a superseded release is left: each cluster has the
	// objects of the application's last release it got, and only those.
	for _, app := range c.apps {
		last := plan[app][len(plan[app])-1]
		lastProd := last
		if c.rejected[app] == last {
			lastProd = last - 1
		}
		for cl, k := range map[string]int{testC: last, prodC: lastProd} {
			c.checkObjects(cl, app, k)
		}
	}

	// No error logged that is not a retry.
	errorLines := c.errorsLogged()
	for _, l := range errorLines {
		t.Errorf("logged an error: %s", l)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.kills))
	total := 0
	for n, k := range c.kills {
		names = append(names, fmt.Sprintf("%s %d", n, k))
		total += k
	}
	sort.Strings(names)
	slices.Sort(c.took)
	t.Logf("chaos: %d releases (each from its cut to its end: median %v, max %v); %d kills -9 (%s); NATS: one node killed, the whole cluster restarted (%d node kills); extra applies after agent kills %v; errors logged %d",
		c.total, c.took[len(c.took)/2].Round(100*time.Millisecond), c.took[len(c.took)-1].Round(100*time.Millisecond),
		total, strings.Join(names, ", "), c.natsKills, extra, len(errorLines))
	for _, r := range rows {
		t.Logf("chaos: %s", r)
	}
}

// startedSteps counts the step.started events per "<release>/<step>" in
// the steps stream.
func (c *chaos) startedSteps() map[string]int {
	t := c.t
	out := map[string]int{}
	var err error
	// Each try on a connection of its own: one made to a node still
	// catching up after the cluster's restart may find no JetStream there.
	for try := range 40 {
		if err = c.readStarted(c.s.adminJetStream(t), out); err == nil {
			return out
		}
		t.Logf("chaos: read the steps stream (try %d): %v", try+1, err)
		clear(out)
		time.Sleep(3 * time.Second)
	}
	t.Fatalf("read the steps stream: %v", err)
	return nil
}

func (c *chaos) readStarted(js jetstream.JetStream, out map[string]int) error {
	ctx, cancel := context.WithTimeout(c.s.ctx, time.Minute)
	defer cancel()
	// Message by message (a few hundred): an ordered consumer over this
	// stream, after the cluster's restart, answered "no responders" a
	// hundred messages in, every time.
	st, err := js.Stream(ctx, bus.StreamSteps)
	if err != nil {
		return err
	}
	state := st.CachedInfo().State
	prefix := strings.TrimSuffix(bus.StepSubject(c.ns, "x"), "x")
	for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("step event %d: %w", seq, err)
		}
		if !strings.HasPrefix(m.Subject, prefix) {
			continue
		}
		e, err := events.DecodeStored(m)
		if err != nil {
			return fmt.Errorf("step event %d on %s: %w", seq, m.Subject, err)
		}
		if d, ok := e.Data.(*events.StepData); ok && e.Type == events.TypeStepStarted {
			out[d.Release+"/"+d.Step]++
		}
	}
	return nil
}

var appliedLine = regexp.MustCompile(`msg="release applied".* release=(\S+)`)

// agentApplies counts each release applied by a cluster's agent, from its
// log (every run of it, appended).
func (c *chaos) agentApplies(cluster string) map[string]int {
	data, err := os.ReadFile(filepath.Join(c.s.dir, "logs", "agent-"+cluster+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(data), "\n") {
		if m := appliedLine.FindStringSubmatch(l); m != nil {
			out[m[1]]++
		}
	}
	return out
}

// checkObjects checks that the cluster holds app's objects of release k
// alone: its Deployment and that release's ConfigMap.
func (c *chaos) checkObjects(cluster, app string, k int) {
	t := c.t
	release := fmt.Sprintf("%s-v%d", app, k)
	var list unstructured.UnstructuredList
	for attempt := 0; ; attempt++ {
		out, _, err := c.s.env.Testbed.Kubectl(c.s.ctx, cluster, "get", "deployments,configmaps", "-n", c.ns,
			"-l", apply.LabelManagedBy+"="+apply.ManagedByValue+","+apply.LabelApplication+"="+app, "-o", "json")
		if err == nil {
			err = list.UnmarshalJSON([]byte(out))
		}
		if err == nil {
			break
		}
		if attempt == 10 {
			t.Fatalf("list %s's objects in %s: %v", app, cluster, err)
		}
		time.Sleep(time.Second)
	}
	var got []string
	for _, o := range list.Items {
		got = append(got, o.GetKind()+" "+o.GetName()+" "+o.GetLabels()[apply.LabelRelease])
	}
	sort.Strings(got)
	want := []string{fmt.Sprintf("ConfigMap %s-cfg-%d %s", app, k, release), "Deployment " + app + " " + release}
	if !slices.Equal(got, want) {
		t.Errorf("%s has %v of %s, want %v (nothing of a superseded release)", cluster, got, app, want)
	}
}

// errorsLogged are the error records in the services' and agents' logs.
func (c *chaos) errorsLogged() []string {
	var out []string
	files, err := filepath.Glob(filepath.Join(c.s.dir, "logs", "*.log"))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if !slices.ContainsFunc([]string{"planner", "dispatcher", "gate", "agent-"}, func(p string) bool { return strings.HasPrefix(base, p) }) {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "level=ERROR") {
				out = append(out, base+": "+l)
			}
		}
	}
	return out
}
