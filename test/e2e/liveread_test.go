package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// kubeconfigAs writes a hub kubeconfig that logs in as ServiceAccount sa of
// demo (a token), so a command runs as that person, not as the admin.
func (s *suite) kubeconfigAs(t *testing.T, sa string) string {
	t.Helper()
	token := strings.TrimSpace(s.must("kubectl", "create", "token", sa, "-n", "demo", "--duration", "1h"))
	hub := s.env.Testbed.Hub
	kc := clientcmdapi.NewConfig()
	kc.Clusters["hub"] = &clientcmdapi.Cluster{Server: hub.URL, CertificateAuthorityData: hub.Config.CAData}
	kc.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[sa] = &clientcmdapi.Context{Cluster: "hub", AuthInfo: sa, Namespace: "demo"}
	kc.CurrentContext = sa
	path := filepath.Join(s.dir, "kubeconfig-"+sa)
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// liveReadsFollowHubRBAC: `kubectl flotilla get` shows a cluster's object
// only to a person the hub lets get its Application; one who may not sees
// the hub's refusal and nothing of the object; and the CLI's NATS login,
// which people share, cannot ask an agent around the hub.
func (s *suite) liveReadsFollowHubRBAC(t *testing.T, cluster string) {
	t.Helper()
	s.must("kubectl", "create", "serviceaccount", "mallory", "-n", "demo")
	s.must("kubectl", "create", "serviceaccount", "viewer", "-n", "demo")
	// mallory may read Deployments on the hub, not Applications.
	s.must("kubectl", "create", "role", "deployment-reader", "-n", "demo", "--verb=get,list", "--resource=deployments.apps")
	s.must("kubectl", "create", "rolebinding", "mallory", "-n", "demo", "--role=deployment-reader", "--serviceaccount=demo:mallory")
	s.must("kubectl", "create", "role", "app-reader", "-n", "demo", "--verb=get", "--resource=applications.core.oam.dev", "--resource-name=demo")
	s.must("kubectl", "create", "rolebinding", "viewer", "-n", "demo", "--role=app-reader", "--serviceaccount=demo:viewer")

	out := s.eventually(`1/1`, "kubectl", "flotilla", "get", "deployment", "demo", "-n", "demo", "-m", cluster, "--kubeconfig", s.kubeconfigAs(t, "viewer"))
	matchLines(t, out, "Run on ManagedCluster "+cluster, `NAME   READY   UP-TO-DATE   AVAILABLE   AGE`, `demo   1/1     1            1           \w+`)

	mallory := s.kubeconfigAs(t, "mallory")
	for _, format := range []string{"", "yaml"} {
		args := []string{"flotilla", "get", "deployment", "demo", "-n", "demo", "-m", cluster, "--kubeconfig", mallory}
		if format != "" {
			args = append(args, "-o", format)
		}
		out, err := s.run("kubectl", args...)
		if err == nil || strings.Contains(out, "rollouts-demo") || strings.Contains(out, "1/1") {
			t.Errorf("mallory read the Deployment (%v):\n%s", err, out)
		}
		matchLines(t, out, "Run on ManagedCluster "+cluster,
			`Error from server \(Forbidden\): system:serviceaccount:demo:mallory may not read Deployment "demo" in namespace "demo" of cluster `+cluster+`: that takes get on the Application it belongs to, on the hub`)
	}

	// Around the hub: the CLI's NATS login asks the agent directly.
	refused := &refusals{}
	nc, err := nats.Connect(s.env.NATSURL, nats.UserCredentials(s.env.Creds("cli")), nats.RootCAs(s.env.TLS.CA), nats.CustomInboxPrefix(bus.CLIInboxPrefix), nats.ErrorHandler(refused.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	if msg, err := nc.RequestWithContext(ctx, bus.QuerySubject(cluster), []byte(`{"group":"apps","version":"v1","kind":"Deployment","namespace":"demo","name":"demo"}`)); err == nil {
		t.Errorf("the CLI's NATS login read through the agent around the hub: %s", msg.Data)
	}
	refused.wait(t, "the CLI's NATS login", "Publish", bus.QuerySubject(cluster))
}
