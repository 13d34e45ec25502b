package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/pkg/query"
)

func newGet(o *Options) *cobra.Command {
	var clusters, output string
	cmd := &cobra.Command{
		Use:   "get KIND NAME -m CLUSTER[,CLUSTER...]",
		Short: "Show an object as it is in managed clusters (read live through each cluster's agent)",
		Example: `  kubectl flotilla get deployment demo -n demo -m managedcluster-c5x9z9
  kubectl flotilla get deploy/demo -n demo -m c1,c2 -o yaml`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name := args[0], ""
			if len(args) == 2 {
				name = args[1]
			} else if k, n, ok := strings.Cut(kind, "/"); ok {
				kind, name = k, n
			}
			if name == "" {
				return errors.New("give KIND NAME (or KIND/NAME)")
			}
			if clusters == "" {
				return errors.New("-m CLUSTER is required: the managed cluster(s) to read from (kubectl get managedclusters)")
			}
			return o.get(cmd, kind, name, strings.Split(clusters, ","), output)
		},
	}
	cmd.Flags().StringVarP(&clusters, "cluster", "m", "", "managed cluster(s), comma-separated")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json (default: the table kubectl prints)")
	return cmd
}

func (o *Options) get(cmd *cobra.Command, kind, name string, clusters []string, output string) error {
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	mapper, err := o.Kube.ToRESTMapper()
	if err != nil {
		return err
	}
	gvk, err := mapper.KindFor(schema.ParseGroupResource(kind).WithVersion(""))
	if err != nil {
		return fmt.Errorf("the server doesn't have a resource type %q", kind)
	}
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	if mapping.Scope.Name() != "namespace" {
		ns = ""
	}
	_, cs, err := o.clients()
	if err != nil {
		return err
	}
	out, errOut := o.IO.Out, o.IO.ErrOut
	failed := false
	for _, cluster := range clusters {
		fmt.Fprintf(out, "Run on ManagedCluster %s\n", cluster)
		resp, err := liveRead(cmd.Context(), cs.CoreV1().RESTClient(), cluster, query.Request{
			Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind, Namespace: ns, Name: name, Table: output == "",
		})
		refused, err := report(out, errOut, resp, err, output)
		if err != nil {
			return err
		}
		failed = failed || refused
	}
	if failed {
		return printedError{errors.New("failed")}
	}
	return nil
}

// liveRead asks the hub's live-read API (query.flotilla.dev, served by the
// dispatcher through the hub's API server) for req in cluster: the hub
// authenticates the person as for any request, and the object is shown
// only if the hub's RBAC lets them get its Application. A refusal is a
// *query.Error, as the hub or the cluster gave it.
func liveRead(ctx context.Context, rc rest.Interface, cluster string, req query.Request) (*query.Response, error) {
	u := query.URL(cluster, req)
	r := rc.Get().AbsPath(u.Path)
	for k, vs := range u.Query() {
		for _, v := range vs {
			r = r.Param(k, v)
		}
	}
	res := r.Do(ctx)
	body, err := res.Raw()
	if err != nil {
		err = res.Error() // the Status the hub sent, which Raw's error is not
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		msg := s.Message
		if s.Code == http.StatusNotFound && strings.Contains(msg, "could not find the requested resource") {
			msg += " (the hub serves no live reads: install deploy/liveread and run the dispatcher with --live-read-listen)"
		}
		return nil, &query.Error{Code: int(s.Code), Reason: string(s.Reason), Message: msg}
	}
	if err != nil {
		return nil, fmt.Errorf("live read of cluster %s through the hub: %w", cluster, err)
	}
	var resp query.Response
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("live read of cluster %s: bad answer: %w", cluster, err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return &resp, nil
}

// report prints one cluster's answer as kubectl prints it: the object on
// out, or the refusal on errOut ("Error from server (Reason): message"),
// and says whether it was refused (the command then exits 1, the other
// clusters shown still). err is the query's error.
func report(out, errOut io.Writer, resp *query.Response, err error, output string) (refused bool, _ error) {
	var qe *query.Error
	switch {
	case errors.As(err, &qe):
		fmt.Fprintf(errOut, "Error from server (%s): %s\n", qe.Reason, qe.Message)
		return true, nil
	case err != nil:
		fmt.Fprintf(errOut, "error: %v\n", err)
		return true, nil
	}
	return false, print(out, resp, output)
}

func print(w io.Writer, resp *query.Response, output string) error {
	switch output {
	case "json":
		var v any
		if err := json.Unmarshal(resp.Object, &v); err != nil {
			return err
		}
		data, _ := json.MarshalIndent(v, "", "    ")
		_, err := fmt.Fprintln(w, string(data))
		return err
	case "yaml":
		data, err := yaml.JSONToYAML(resp.Object)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	case "":
		table := &metav1.Table{}
		if err := json.Unmarshal(resp.Table, table); err != nil {
			return fmt.Errorf("the agent sent no table: %w", err)
		}
		// The rows' objects are PartialObjectMetadata; the printer needs them decoded.
		for i := range table.Rows {
			if len(table.Rows[i].Object.Raw) > 0 {
				u := &unstructured.Unstructured{}
				if err := u.UnmarshalJSON(table.Rows[i].Object.Raw); err == nil {
					table.Rows[i].Object.Object = u
				}
			}
		}
		return printers.NewTablePrinter(printers.PrintOptions{}).PrintObj(table, w)
	}
	return fmt.Errorf("unknown output format %q: use yaml or json", output)
}
