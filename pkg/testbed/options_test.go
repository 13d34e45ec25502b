package testbed

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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
	start := time.Now()
	_, err := Start(context.Background(), Options{Clusters: []string{"a", "a"}, Dir: dir, BinDir: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("Start() error = %v, want duplicate cluster name", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Start took %v to refuse bad options", d)
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
	bin := t.TempDir()
	for _, b := range Binaries {
		script := "#!/bin/sh\nsleep 60\n"
		if b == "etcd" {
			script = "#!/bin/sh\necho 'etcd: cannot open data dir: disk on fire' >&2\nexit 3\n"
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
}
