package jaeger

import (
	"context"
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/proc"
	"github.com/flotilla-dev/flotilla/pkg/testbed"
)

// Config is the Jaeger configuration Start runs (also hack/jaeger/config.yaml):
// in-memory storage, the query API, and an OTLP receiver, all on loopback,
// ports from the JAEGER_*_PORT variables.
//
//go:embed config.yaml
var Config []byte

// Options say how to run Jaeger.
type Options struct {
	// Bin is the jaeger binary. Empty: $FLOTILLA_JAEGER_BIN, else bin/jaeger
	// in the Flotilla module above the working directory.
	Bin string
	// Dir receives the configuration (jaeger.yaml) and, unless LogFile says
	// otherwise, the log (jaeger.log). Empty: a temporary directory that
	// Stop removes.
	Dir string
	// LogFile is where Jaeger logs. Empty: Dir/jaeger.log.
	LogFile string
	// StartTimeout bounds Start. Zero: 30 seconds.
	StartTimeout time.Duration
}

// Jaeger is a running Jaeger. Stop it when done.
type Jaeger struct {
	// QueryURL is the query API, e.g. http://127.0.0.1:16686.
	QueryURL string
	// OTLPHTTPEndpoint is OTLP over HTTP, e.g. http://127.0.0.1:4318
	// (the value for OTEL_EXPORTER_OTLP_ENDPOINT with http/protobuf).
	OTLPHTTPEndpoint string
	// OTLPGRPCEndpoint is OTLP over gRPC, e.g. http://127.0.0.1:4317.
	OTLPGRPCEndpoint string

	proc      *proc.Process
	removeDir string
}

// Process is Jaeger's process.
func (j *Jaeger) Process() *proc.Process { return j.proc }

// Client is a query API client of this Jaeger.
func (j *Jaeger) Client() *Client { return New(j.QueryURL) }

// ExporterEnv is the environment that makes an OpenTelemetry SDK (Flotilla's
// services among them) export spans here over OTLP/HTTP, batched briefly.
func (j *Jaeger) ExporterEnv() []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + j.OTLPHTTPEndpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=500",
	}
}

// Stop stops Jaeger (SIGTERM, then SIGKILL after 5s) and removes its
// temporary directory if Start made one. The traces are gone with it.
func (j *Jaeger) Stop() {
	j.proc.Stop(5 * time.Second)
	if j.removeDir != "" {
		_ = os.RemoveAll(j.removeDir)
	}
}

// ResolveBin finds the jaeger binary as Options.Bin documents, and says to
// run `make jaeger` when it is not there.
func ResolveBin(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("FLOTILLA_JAEGER_BIN")
	}
	if bin == "" {
		root, err := testbed.ModuleRoot()
		if err != nil {
			return "", fmt.Errorf("jaeger: binary: %w (set FLOTILLA_JAEGER_BIN or Options.Bin)", err)
		}
		bin = filepath.Join(root, "bin", "jaeger")
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return "", fmt.Errorf("jaeger: %s missing: run `make jaeger`", bin)
	}
	return bin, nil
}

// Start runs Jaeger on free loopback ports and returns once its query API
// answers and its OTLP receivers listen. A failure names the process and
// quotes the end of its log; nothing is left running.
func Start(ctx context.Context, o Options) (*Jaeger, error) {
	bin, err := ResolveBin(o.Bin)
	if err != nil {
		return nil, err
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	j := &Jaeger{}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "flotilla-jaeger-"); err != nil {
			return nil, fmt.Errorf("jaeger: %w", err)
		}
		j.removeDir = o.Dir
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	cleanup := func() {
		if j.removeDir != "" {
			_ = os.RemoveAll(j.removeDir)
		}
	}
	if o.LogFile == "" {
		o.LogFile = filepath.Join(o.Dir, "jaeger.log")
	}
	config := filepath.Join(o.Dir, "jaeger.yaml")
	if err := os.WriteFile(config, Config, 0o644); err != nil {
		cleanup()
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	ports, err := testbed.FreePorts(4)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("jaeger: free ports: %w", err)
	}
	queryHTTP, queryGRPC, otlpGRPC, otlpHTTP := ports[0], ports[1], ports[2], ports[3]
	host := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	j.QueryURL = "http://" + host(queryHTTP)
	j.OTLPHTTPEndpoint = "http://" + host(otlpHTTP)
	j.OTLPGRPCEndpoint = "http://" + host(otlpGRPC)
	env := []string{
		"JAEGER_QUERY_HTTP_PORT=" + strconv.Itoa(queryHTTP),
		"JAEGER_QUERY_GRPC_PORT=" + strconv.Itoa(queryGRPC),
		"JAEGER_OTLP_GRPC_PORT=" + strconv.Itoa(otlpGRPC),
		"JAEGER_OTLP_HTTP_PORT=" + strconv.Itoa(otlpHTTP),
	}
	p, err := proc.Start("jaeger", bin, []string{"--config", config}, env, o.LogFile)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	j.proc = p
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	if err := j.waitReady(ctx, host(queryGRPC), host(otlpGRPC), host(otlpHTTP)); err != nil {
		j.Stop()
		return nil, err
	}
	return j, nil
}

// waitReady polls until the query API answers and every port listens.
func (j *Jaeger) waitReady(ctx context.Context, addrs ...string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		last = j.ready(ctx, hc, addrs)
		if last == nil {
			return nil
		}
		if j.proc.Exited() {
			return j.proc.Failure(fmt.Errorf("%w: %v", proc.ErrExited, last))
		}
		select {
		case <-ctx.Done():
			return j.proc.Failure(fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), last))
		case <-j.proc.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (j *Jaeger) ready(ctx context.Context, hc *http.Client, addrs []string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.QueryURL+"/api/services", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("query API at %s: %w", j.QueryURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("query API at %s: HTTP %d", j.QueryURL, resp.StatusCode)
	}
	var d net.Dialer
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err != nil {
			return fmt.Errorf("%s does not listen: %w", a, err)
		}
		c.Close()
	}
	return nil
}
