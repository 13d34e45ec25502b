package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/bus"
	"github.com/flotilla-dev/flotilla/pkg/hub"
	"github.com/flotilla-dev/flotilla/pkg/natstest"
	"github.com/flotilla-dev/flotilla/pkg/telemetry"
)

// lines is a service's log, read while it runs.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// metricsURL is where the service says it serves /metrics ("" when it says nothing).
func (l *lines) metricsURL() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving metrics" {
			return rec.Addr
		}
	}
	return ""
}

// --metrics-bind-address 0 turns the endpoint off (and is not an address
// to listen on); an address serves /metrics there while the service runs.
func TestMetricsBindAddress(t *testing.T) {
	s := natstest.New(t)
	// The hub is not reached by start itself: a kubeconfig naming one will do.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: hub, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: admin, user: {token: t}}]
contexts: [{name: hub, context: {cluster: hub, user: admin}}]
current-context: hub
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	tests := []struct {
		name   string
		addr   string
		serves bool
	}{
		{"off", "0", false},
		{"on a free port", "127.0.0.1:0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &lines{}
			c := &Common{
				Kube: hub.Options{Kubeconfig: kubeconfig}, NATS: bus.ConnectOptions{URL: s.URL(), Name: "flotilla-test"},
				Log: telemetry.LogOptions{Level: "info", Format: "json"}, MetricsAddr: tt.addr,
			}
			ran := false
			err := start("test", c, log, func(ctx context.Context, d Deps) error {
				ran = true
				if d.Instruments.Metrics == nil {
					return fmt.Errorf("no metrics registry")
				}
				url := log.metricsURL()
				if !tt.serves {
					if url != "" {
						return fmt.Errorf("metrics served at %s with --metrics-bind-address %s", url, tt.addr)
					}
					return nil
				}
				if url == "" {
					return fmt.Errorf("no metrics endpoint announced")
				}
				hc := &http.Client{Timeout: 20 * time.Second}
				resp, err := hc.Get(url)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "go_goroutines") {
					return fmt.Errorf("GET %s: %s\n%s", url, resp.Status, body)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("start with --metrics-bind-address %s: %v", tt.addr, err)
			}
			if !ran {
				t.Fatal("the service's run was not called")
			}
		})
	}
}
