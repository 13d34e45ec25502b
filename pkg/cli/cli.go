// Package cli owns `kubectl flotilla` (also installed as `kubectl amc`): the
// commands users run against the hub, with kubectl's flags and output.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/flotilla-dev/flotilla/pkg/bus"
)

// Options are shared by every command.
type Options struct {
	Kube *genericclioptions.ConfigFlags
	// NATS are the connect flags of the one command that reads the hub's
	// NATS itself: bundle export (live reads go through the hub's API server).
	NATS bus.ConnectOptions
	IO   genericiooptions.IOStreams
}

func (o *Options) namespace() (string, error) {
	ns, _, err := o.Kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	return ns, nil
}

func (o *Options) clients() (dynamic.Interface, kubernetes.Interface, error) {
	cfg, err := o.Kube.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("hub kubeconfig: %w (set --kubeconfig or KUBECONFIG)", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	return dyn, cs, nil
}

// New returns the root command. name is how it was invoked (kubectl-flotilla or kubectl-amc).
func New(name string, streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{Kube: genericclioptions.NewConfigFlags(true), IO: streams}
	root := &cobra.Command{
		Use:           strings.TrimPrefix(name, "kubectl "),
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: name},
		Short:         "Roll applications out across clusters with Flotilla",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.Kube.AddFlags(root.PersistentFlags())
	// Live reads go through the hub (its RBAC decides); only bundle export
	// logs in to NATS.
	o.NATS.BindFlags(root.PersistentFlags())
	root.AddCommand(newGet(o), newWorkflow(o), newCluster(o), newTrace(o), newBundle(o))
	return root
}

// Main runs the CLI and returns the process exit code.
func Main(name string, args []string, stdout, stderr io.Writer) int {
	cmd := New(name, genericiooptions.IOStreams{In: os.Stdin, Out: stdout, ErrOut: stderr})
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		if _, printed := err.(printedError); !printed {
			fmt.Fprintln(stderr, "error:", err)
		}
		return 1
	}
	return 0
}

// printedError is an error the command already printed the way kubectl does.
type printedError struct{ error }
