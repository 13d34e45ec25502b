package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/eventually"
)

// parentEnv makes the test binary a parent that starts a child with Start
// (writing the child's PID to child.pid in the directory it names) and waits.
const parentEnv = "FLOTILLA_PROC_TEST_PARENT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(parentEnv); dir != "" {
		os.Exit(beParent(dir))
	}
	os.Exit(m.Run())
}

func beParent(dir string) int {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p, err := Start("child", sleep, []string{"600"}, nil, filepath.Join(dir, "child.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tmp := filepath.Join(dir, "child.pid.tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(p.PID())), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Rename(tmp, filepath.Join(dir, "child.pid")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	time.Sleep(time.Hour) // until killed
	return 0
}

// gone says whether pid no longer runs: no such process, or a zombie
// (dead, waiting for whoever inherited it to reap it).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...: the state follows the last ')'.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

// A process started with Start dies with the process that started it, even
// when that one is killed and can clean nothing up.
func TestDiesWithItsParent(t *testing.T) {
	dir := t.TempDir()
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"="+dir)
	parent.Stderr = os.Stderr
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- parent.Wait() }()
	t.Cleanup(func() { _ = parent.Process.Kill() })
	pid := eventually.Value(t, 30*time.Second, "the parent to start its child", func() (int, error) {
		select {
		case err := <-exited:
			t.Fatalf("the parent exited before starting its child: %v", err)
		default:
		}
		data, err := os.ReadFile(filepath.Join(dir, "child.pid"))
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(string(data))
	}, func(pid int) bool { return pid > 0 })
	t.Cleanup(func() {
		if !gone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if gone(pid) {
		t.Fatalf("child %d is not running while its parent runs", pid)
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	eventually.True(t, 30*time.Second, fmt.Sprintf("child %d to die with its parent", pid), func() (bool, error) {
		return gone(pid), nil
	})
}

// Stop ends a process that stops on SIGTERM, and kills one that ignores it
// once the grace has passed; either way it is gone when Stop returns.
func TestStop(t *testing.T) {
	tests := []struct {
		name   string
		script string
		grace  time.Duration
	}{
		{"stops on SIGTERM", "exec sleep 600\n", time.Minute},
		{"ignores SIGTERM", "trap '' TERM\nexec sleep 600\n", 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "prog")
			if err := os.WriteFile(bin, []byte("#!/bin/sh\necho started\n"+tt.script), 0o755); err != nil {
				t.Fatal(err)
			}
			log := filepath.Join(dir, "prog.log")
			p, err := Start("prog", bin, nil, nil, log)
			if err != nil {
				t.Fatal(err)
			}
			// Started: its log says so.
			eventually.True(t, 30*time.Second, "the program to start", func() (bool, error) {
				return Tail(log, 5) == "started", nil
			})
			if p.Exited() {
				t.Fatal("exited before Stop")
			}
			p.Stop(tt.grace)
			if !p.Exited() || !gone(p.PID()) {
				t.Errorf("pid %d still runs after Stop", p.PID())
			}
			if err := p.Failure(errors.New("boom")); !strings.Contains(err.Error(), "started") || !strings.Contains(err.Error(), "exited") {
				t.Errorf("Failure() = %v, want the exit and the log's end", err)
			}
		})
	}
}
