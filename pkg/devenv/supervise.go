package devenv

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/flotilla-dev/flotilla/pkg/proc"
)

// A process that exits when nobody stopped it is started again, as a
// kubelet restarts a container: after a back-off that doubles from
// restartFirst to restartMax while it keeps dying, and starts over once a
// run lasted restartReset.
const (
	restartFirst  = time.Second
	restartMax    = 30 * time.Second
	restartReset  = time.Minute
	superviseTick = 250 * time.Millisecond
)

// restartState is one process's crash-loop back-off.
type restartState struct {
	// seen is the run whose exit was noticed; next when to start again.
	seen  *proc.Process
	delay time.Duration
	next  time.Time
	// Restarts counts the restarts so far.
	restarts int
}

// supervise restarts the processes that die until ctx ends.
func (e *Env) supervise(ctx context.Context) {
	defer e.supervised.Done()
	t := time.NewTicker(superviseTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.restartDied(ctx)
		}
	}
}

// restartDied notices each process that exited unexpectedly (recording
// it for Died) and starts again those whose back-off is over.
func (e *Env) restartDied(ctx context.Context) {
	now := time.Now()
	var due []string
	e.mu.Lock()
	for name, p := range e.latest() {
		if _, restartable := e.cmds[name]; !restartable || e.stopped[name] || !p.Exited() {
			continue
		}
		b := e.backoff[name]
		if b == nil {
			b = &restartState{}
			e.backoff[name] = b
		}
		if b.seen != p {
			b.seen = p
			if !e.killed[p] {
				e.crashes = append(e.crashes, p.Failure(errors.New("died")))
			}
			switch {
			case b.delay == 0 || now.Sub(p.Started()) >= restartReset:
				b.delay = restartFirst
			default:
				b.delay = min(2*b.delay, restartMax)
			}
			b.next = now.Add(b.delay)
		}
		if !now.Before(b.next) {
			due = append(due, name)
			b.restarts++
		}
	}
	e.mu.Unlock()
	for _, name := range due {
		if ctx.Err() != nil {
			return
		}
		p, err := e.Restart(name)
		if err != nil {
			e.log("restart %s: %v", name, err)
			continue
		}
		e.log("%s died; started again (pid %d)", name, p.PID())
	}
}

// Kill kills a process with SIGKILL, as a crash would, on purpose (Died
// does not report it): the supervisor starts it again.
func (e *Env) Kill(name string) (*proc.Process, error) {
	p := e.Process(name)
	if p == nil {
		return nil, fmt.Errorf("devenv: no process %q", name)
	}
	e.mu.Lock()
	e.killed[p] = true
	e.mu.Unlock()
	if err := syscall.Kill(p.PID(), syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("devenv: kill %s: %w", name, err)
	}
	<-p.Done()
	return p, nil
}

// latest is each name's newest process (e.mu held).
func (e *Env) latest() map[string]*proc.Process {
	out := map[string]*proc.Process{}
	for _, p := range e.procs {
		out[p.Name()] = p
	}
	return out
}

// noticed says whether the supervisor already recorded p's exit (e.mu
// held).
func (e *Env) noticed(name string, p *proc.Process) bool {
	b := e.backoff[name]
	return b != nil && b.seen == p
}

// Restarts is how often the supervisor started a process again.
func (e *Env) Restarts(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b := e.backoff[name]; b != nil {
		return b.restarts
	}
	return 0
}

func (e *Env) log(format string, args ...any) {
	if e.opts.Log != nil {
		e.opts.Log(format, args...)
	}
}
