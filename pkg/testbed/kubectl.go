package testbed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Kubectl runs the test bed's kubectl (v1.37) against the named cluster, as a
// user would, and returns what it printed. err is non-nil when kubectl exits
// non-zero; stdout and stderr are returned either way.
func (e *Env) Kubectl(ctx context.Context, cluster string, args ...string) (stdout, stderr string, err error) {
	c := e.Cluster(cluster)
	if c == nil {
		return "", "", fmt.Errorf("kubectl: no cluster %q in the test bed", cluster)
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), errb.String(), fmt.Errorf("kubectl %v on %s: %w: %s", args, cluster, err, errb.String())
	}
	return out.String(), errb.String(), nil
}
