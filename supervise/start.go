package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/trust"
)

// Spec says how to start a process.
type Spec struct {
	Argv    []string // argv[0] names the executable (looked up in PATH when it has no slash)
	Env     []string // the environment, "KEY=value"; nil inherits ours
	Dir     string   // working directory; "" is ours
	LogPath string   // stdout and stderr are appended here (created 0600; never through a link, and only to a file of ours); "" discards them
}

// cmdlineWait bounds how long Start waits for a fresh child's command line
// to appear in /proc: the exec has succeeded when Start returns, but the
// kernel fills in the argument area a moment later.
const cmdlineWait = 100 * time.Millisecond

// Start starts a detached process as spec says (see the package doc): new
// session, stdin /dev/null, output appended to spec.LogPath. It returns
// once the program has been executed and its identity read. The process
// is never killed on our behalf; a goroutine reaps it when it exits, which
// closes Done.
func Start(spec Spec) (*Process, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errors.New("supervise: start: empty Argv (argv[0] must name the executable)")
	}
	name := spec.Argv[0]
	cmd := exec.Command(name, spec.Argv[1:]...)
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	// Setsid and nothing else: no Pdeathsig, no Cancel; the child must
	// outlive us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if spec.LogPath != "" {
		// Never through a link, and only a file of ours: the log is in
		// the state directory, and appending a process' output to a
		// file someone else chose would write wherever we can.
		log, _, err := trust.OpenFile("log file", spec.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("supervise: start %q: open log: %w", name, err)
		}
		// The child gets its own copies of the descriptor; ours is not
		// needed once it runs.
		defer log.Close()
		cmd.Stdout, cmd.Stderr = log, log
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		if spec.Dir != "" {
			// A missing Dir fails as "fork/exec <argv[0]>: no such
			// file or directory", which does not say which.
			return nil, fmt.Errorf("supervise: start %q in directory %q: %w", name, spec.Dir, err)
		}
		return nil, fmt.Errorf("supervise: start %q: %w", name, err)
	}
	// The child cannot be reaped before the wait goroutine runs, so its
	// pid still names it here, even if it has exited already.
	id, err := childIdentity(cmd.Process.Pid)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("supervise: start %q: %w (the process was killed)", name, err)
	}
	p := &Process{id: id, done: make(chan struct{}), started: began, cmd: cmd}
	go p.reap()
	return p, nil
}

// childIdentity reads the identity of our fresh, unreaped child, waiting a
// little for its command line when the kernel has not filled it in yet.
func childIdentity(pid int) (procid.Identity, error) {
	deadline := time.Now().Add(cmdlineWait)
	for {
		id, err := procid.Of(pid)
		if err != nil {
			return procid.Identity{}, fmt.Errorf("read identity of pid %d: %w", pid, err)
		}
		// An empty command line is also what a child that has already
		// exited (a zombie) shows; then there is nothing to wait for.
		if len(id.Cmdline) > 0 || !id.Alive() || time.Now().After(deadline) {
			return id, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// reap waits for our child and records how it ended. It runs while we live;
// after we exit, init reaps the child.
func (p *Process) reap() {
	_ = p.cmd.Wait() // the error only restates the exit status, kept in ProcessState
	p.finish(p.cmd.ProcessState)
}
