package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/procid"
)

// helperEnv, when set, makes the test binary act as a helper process
// instead of running tests.
const helperEnv = "SUPERVISE_TEST_HELPER"

// helperStartAndExit: Start `sleep 100` detached, print its identity as
// JSON on stdout, and exit at once, as a daemon that dies would.
const helperStartAndExit = "start-and-exit"

func TestMain(m *testing.M) {
	switch h := os.Getenv(helperEnv); h {
	case "":
	case helperStartAndExit:
		os.Exit(startAndExit())
	case helperInFlightKill:
		os.Exit(inFlightKill())
	default:
		fmt.Fprintf(os.Stderr, "supervise test helper: unknown %s=%q\n", helperEnv, h)
		os.Exit(2)
	}
	// Processes orphaned by a helper are re-parented to us rather than to
	// pid 1, so that the tests can reap them: the init of some containers
	// never does, and they would stay zombies. It changes who reaps an
	// adopted process, not how Adopt watches it (pidfd, never wait).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "supervise tests: become child subreaper: %v\n", err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// startAndExit is the helper helperStartAndExit.
func startAndExit() int {
	p, err := Start(Spec{Argv: []string{"sleep", "100"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(p.Identity()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// deadline bounds every wait in the tests; it is generous because it only
// has to catch hangs, never to measure.
const deadline = 10 * time.Second

// waitDone waits for p to exit.
func waitDone(t *testing.T, p *Process, what string) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(deadline):
		t.Fatalf("%s: %v not Done after %v", what, p.Identity(), deadline)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", deadline, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isDone reports whether Done is closed now.
func isDone(p *Process) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// start Starts spec and kills the process at the end of the test.
func start(t *testing.T, spec Spec) *Process {
	t.Helper()
	p, err := Start(spec)
	if err != nil {
		t.Fatalf("Start(%q): %v", spec.Argv, err)
	}
	t.Cleanup(func() { kill(t, p) })
	return p
}

// kill kills p unless it has exited and waits for Done.
func kill(t *testing.T, p *Process) {
	t.Helper()
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, ErrGone) {
		t.Errorf("clean-up: kill %v: %v", p.Identity(), err)
	}
	waitDone(t, p, "clean-up")
}

// child starts `sleep 100` as a plain child of the test (not through
// Start) and kills and reaps it at the end of the test.
func child(t *testing.T) (*exec.Cmd, procid.Identity) {
	t.Helper()
	cmd := exec.Command("sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var id procid.Identity
	waitFor(t, "the child's command line", func() bool {
		var err error
		id, err = procid.Of(cmd.Process.Pid)
		if err != nil {
			t.Fatalf("procid.Of(child): %v", err)
		}
		return len(id.Cmdline) > 0
	})
	return cmd, id
}

// orphan runs a helper process that Starts `sleep 100` and exits, and
// returns the identity of that sleep, which no longer has the parent that
// started it. At the end of the test the sleep is killed and reaped.
func orphan(t *testing.T) procid.Identity {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+helperStartAndExit)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %s: %v; stderr: %s", helperStartAndExit, err, stderr.String())
	}
	var id procid.Identity
	if err := json.Unmarshal(out, &id); err != nil {
		t.Fatalf("helper %s: decode identity %q: %v", helperStartAndExit, out, err)
	}
	t.Cleanup(func() {
		// Only through a pidfd checked against the identity, so that a
		// reused pid is never hit.
		if fd, err := unix.PidfdOpen(id.PID, 0); err == nil {
			if id.Alive() {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			}
			unix.Close(fd)
		}
		// We are its subreaper; ECHILD means it was re-parented elsewhere.
		var ws unix.WaitStatus
		_, _ = unix.Wait4(id.PID, &ws, 0, nil)
	})
	return id
}
