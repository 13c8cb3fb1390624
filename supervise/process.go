package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/procid"
)

// ErrGone is wrapped by the errors about a process that is no longer
// there: it has exited, or its pid now names another process.
var ErrGone = errors.New("supervise: process is gone")

// Process is one supervised process: started by us (Start) or adopted from
// a previous daemon life (Adopt). Its methods are safe for concurrent use.
type Process struct {
	id      procid.Identity
	done    chan struct{}
	started time.Time // when Start or Adopt took it on

	// Exactly one of cmd (started: our child) and the adopted watch is
	// used. pidfd is nil for started processes and for adopted ones in
	// the slow-poll fallback.
	cmd   *exec.Cmd
	pidfd *pidfd

	// Written once before done is closed, read only after.
	exited time.Time
	state  *os.ProcessState // our child's wait status; nil when adopted or unknown
}

// Identity returns the identity of the process, as recorded when it was
// started or adopted.
func (p *Process) Identity() procid.Identity {
	id := p.id
	id.Cmdline = slices.Clone(p.id.Cmdline)
	return id
}

// Done returns a channel that is closed when the process has exited. For a
// started process it closes once the process is reaped; for an adopted one
// when its pidfd reports the exit (or, in the fallback, when the slow poll
// sees it gone).
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitStatus reports how the process ended. For a normal exit, code is the
// exit code and signaled is false; for a death by signal, code is the
// signal number and signaled is true. known is false while the process
// runs, and always for adopted processes (only a parent learns the exit
// status).
func (p *Process) ExitStatus() (code int, signaled bool, known bool) {
	select {
	case <-p.done:
	default:
		return 0, false, false
	}
	if p.state == nil {
		return 0, false, false
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int(ws.Signal()), true, true
	}
	return p.state.ExitCode(), false, true
}

// RanFor returns how long the process has run under our watch: from Start
// or Adopt until it exited, or until now while it runs. For an adopted
// process this is a lower bound of its real run time. It is meant for
// Backoff.Next.
func (p *Process) RanFor() time.Duration {
	select {
	case <-p.done:
		return p.exited.Sub(p.started)
	default:
		return time.Since(p.started)
	}
}

// Signal sends sig to the process. It refuses with an error wrapping
// ErrGone when the process has exited or its identity no longer matches
// (the pid was reused), so a signal never reaches another process: a
// started process is signalled through the handle of our own unreaped
// child, an adopted one through its pidfd (pidfd_send_signal) after
// checking its identity.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("%w: signal %v to %v: it has exited", ErrGone, sig, p.id)
	default:
	}
	var err error
	if p.cmd != nil {
		err = p.cmd.Process.Signal(sig)
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("%w: signal %v to %v: it has exited", ErrGone, sig, p.id)
		}
	} else {
		if !p.id.Alive() {
			return fmt.Errorf("%w: signal %v to %v: no live process has this identity any more (it exited, or the pid was reused)", ErrGone, sig, p.id)
		}
		if p.pidfd != nil {
			err = p.pidfd.signal(sig)
		} else {
			err = syscall.Kill(p.id.PID, sig)
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ESRCH), errors.Is(err, os.ErrClosed):
		return fmt.Errorf("%w: signal %v to %v: it has exited", ErrGone, sig, p.id)
	default:
		return fmt.Errorf("supervise: signal %v to %v: %w", sig, p.id, err)
	}
}

// Stop ends the process: SIGTERM, then up to grace for it to exit, then
// SIGKILL, then waits for Done. It returns nil once the process has exited
// (also when it had exited before), and an error wrapping the context's
// cause when ctx ends first, in which case the process may still run.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, ErrGone) {
		return fmt.Errorf("supervise: stop %v: %w", p.id, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervise: stop %v: SIGTERM sent, gave up within the %v grace: %w", p.id, grace, context.Cause(ctx))
	case <-timer.C:
	}
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, ErrGone) {
		return fmt.Errorf("supervise: stop %v after %v grace: %w", p.id, grace, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervise: stop %v: SIGKILL sent after %v grace, gave up before it exited: %w", p.id, grace, context.Cause(ctx))
	}
}

// finish records the exit and closes done. It is called once, by the
// goroutine that watches the process.
func (p *Process) finish(state *os.ProcessState) {
	p.exited = time.Now()
	p.state = state
	if p.pidfd != nil {
		p.pidfd.close()
	}
	close(p.done)
}
