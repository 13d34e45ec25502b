package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name     string
		clusters []string
		wantErr  []string // substrings; nil means valid
	}{
		{"two clusters", []string{"test", "prod"}, nil},
		{"page-shaped IDs", []string{"managedcluster-c5x9z9", "managedcluster-c1y2e5"}, nil},
		{"the hub alone", nil, nil},
		{"duplicate", []string{"a", "b", "a"}, []string{`duplicate cluster name "a"`}},
		{"upper case", []string{"Prod"}, []string{`"Prod" is not a DNS-1123 label`}},
		{"dot", []string{"prod.eu"}, []string{`"prod.eu" is not a DNS-1123 label`}},
		{"too long", []string{long}, []string{"is not a DNS-1123 label"}},
		{"empty name", []string{""}, []string{`"" is not a DNS-1123 label`}},
		{"hub reserved", []string{"hub"}, []string{"reserved for the hub"}},
		{"every problem reported", []string{"x", "x", "Y_"}, []string{"duplicate", `"Y_"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Options{Clusters: tt.clusters}.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

// Bad options are refused before anything is created or started: the
// binaries are not even looked for, and the directory stays untouched.
func TestStartRefusesBadOptionsBeforeStartingAnything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "env")
	// Binaries looked for first would fail on /nonexistent with another
	// error: the duplicate's says the options were refused first.
	_, err := Start(context.Background(), Options{Clusters: []string{"a", "a"}, Dir: dir, BinDir: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("Start() error = %v, want duplicate cluster name", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Start created %s for bad options", dir)
	}
}

func TestStartNamesMissingBinaries(t *testing.T) {
	bin := t.TempDir()
	_, err := Start(context.Background(), Options{Clusters: []string{"a"}, BinDir: bin})
	if err == nil {
		t.Fatal("Start() with an empty bin dir succeeded")
	}
	for _, want := range []string{"etcd", "kube-apiserver", "kwok", "make testbed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// A process that dies at start fails Start with its name and the end of its
// log, and nothing is left running.
func TestStartReportsAProcessThatDies(t *testing.T) {
	bin, pids := t.TempDir(), filepath.Join(t.TempDir(), "pids")
	for _, b := range Binaries {
		script := "#!/bin/sh\necho $$ >> " + pids + "\nexec sleep 60\n"
		if b == "etcd" {
			script = "#!/bin/sh\necho $$ >> " + pids + "\necho 'etcd: cannot open data dir: disk on fire' >&2\nexit 3\n"
		}
		if err := os.WriteFile(filepath.Join(bin, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Start(context.Background(), Options{Clusters: []string{"a"}, BinDir: bin, StartTimeout: 10 * time.Second})
	if err == nil {
		t.Fatal("Start() succeeded with an etcd that exits")
	}
	for _, want := range []string{"etcd", "exited", "disk on fire"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := assertGone(t, pids); n != 1 {
		t.Errorf("%d processes ran, want etcd alone", n)
	}
}

// fakeEtcd makes the test binary an etcd that answers /health on its
// --listen-client-urls until killed.
const fakeEtcd = "FLOTILLA_TESTBED_FAKE_ETCD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEtcd) != "" {
		os.Exit(serveHealth(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func serveHealth(args []string) int {
	for _, a := range args {
		if url, ok := strings.CutPrefix(a, "--listen-client-urls=http://"); ok {
			mux := http.NewServeMux()
			mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"health":"true"}`) })
			fmt.Fprintln(os.Stderr, http.ListenAndServe(url, mux))
			return 1
		}
	}
	fmt.Fprintln(os.Stderr, "fake etcd: no --listen-client-urls")
	return 2
}

// assertGone checks that every process whose PID the fake binaries wrote
// to pids no longer exists (stopped and reaped), and returns how many ran.
func assertGone(t *testing.T, pids string) int {
	t.Helper()
	data, err := os.ReadFile(pids)
	if err != nil {
		t.Fatalf("no fake binary ran: %v", err)
	}
	lines := strings.Fields(string(data))
	for _, l := range lines {
		pid, err := strconv.Atoi(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("pid %d still exists after Start failed (kill 0: %v)", pid, err)
		}
	}
	return len(lines)
}

// A managed cluster's API server dying while etcd and the hub's API server
// run fails Start, which stops every process it started: none is left.
func TestStartStopsWhatItStartedWhenOneFails(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, pids := t.TempDir(), filepath.Join(t.TempDir(), "pids")
	record := "#!/bin/sh\necho $$ >> " + pids + "\n"
	for _, b := range Binaries {
		script := record + "exec sleep 60\n"
		switch b {
		case "etcd":
			script = record + "export " + fakeEtcd + "=1\nexec " + self + " \"$@\"\n"
		case "kube-apiserver":
			// The hub's never answers; cluster a's dies.
			script = record + "case \"$*\" in *--etcd-prefix=/a*) echo 'a: cannot bind: disk on fire' >&2; exit 3;; esac\nexec sleep 60\n"
		}
		if err := os.WriteFile(filepath.Join(bin, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Start(context.Background(), Options{Clusters: []string{"a"}, BinDir: bin, StartTimeout: 5 * time.Second})
	if err == nil {
		t.Fatal("Start() succeeded with an API server that exits")
	}
	for _, want := range []string{"a/kube-apiserver", "exited", "disk on fire"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// etcd and both API servers ran.
	if n := assertGone(t, pids); n != 3 {
		t.Errorf("%d processes ran, want etcd and two API servers", n)
	}
}
