// Package mmtest is the test harness for MultiModule: it runs real daemons,
// buses and external processes from a test binary, sends and receives
// messages, and waits for conditions with deadlines (never fixed sleeps).
//
// A test package that starts processes calls Main from its TestMain; the
// test binary then doubles as the multimodule binary for its children:
//
//	func TestMain(m *testing.M) { mmtest.Main(m) }
package mmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// EnvMain is set in the environment of processes the harness starts: the
// test binary then runs the multimodule command line instead of tests.
const EnvMain = "MULTIMODULE_MMTEST_MAIN"

// Main runs the tests, or — in a child started by the harness — the
// multimodule command line.
func Main(m *testing.M) {
	if os.Getenv(envNATSNode) == "1" && !fuzzWorker() {
		os.Exit(natsNodeMain(os.Args[1:]))
	}
	if os.Getenv(EnvMain) == "1" && !fuzzWorker() {
		os.Exit(multimodule.Main())
	}
	// Every process this test binary starts, directly or through the code
	// under test (the bus, external tasks), must run multimodule and never
	// the tests again.
	if err := os.Setenv(EnvMain, "1"); err != nil {
		panic(err)
	}
	becomeSubreaper()
	os.Exit(m.Run())
}

// fuzzWorker reports whether this process is a worker of `go test -fuzz`:
// it inherits the environment of the test process, but must run tests.
func fuzzWorker() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzzworker") {
			return true
		}
	}
	return false
}

// Env is one test's MultiModule world: a state directory and everything
// started in it, cleaned up when the test ends.
type Env struct {
	T        testing.TB
	StateDir string
	// Exe is the multimodule binary the Env runs; empty means this test
	// binary (which runs the multimodule command line under Main).
	Exe string
	// Args are global flags given to every command the Env runs, after
	// -s (a Box's --nats, --host, …).
	Args []string
	// Bus, when NATSURL is set, is how Client opens the queues: on a
	// NATS server or cluster as host Bus.Host, instead of the embedded
	// bus of StateDir.
	Bus transit.Options

	mu      sync.Mutex
	procs   []*Proc
	client  *transit.Transit
	tracker *procTracker
}

// NewEnv returns an Env with a fresh state directory. At the end of the
// test it kills every process of that directory — the ones it started,
// the bus, external processes and their co-processes, also any started
// just as the test ended — and reaps those that ended up its children
// (see procs.go). A process that cannot be killed fails the test.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	e := &Env{T: t, StateDir: filepath.Join(t.TempDir(), "state")}
	e.tracker = newProcTracker(e.StateDir)
	t.Cleanup(e.cleanup)
	return e
}

// Command returns a command running multimodule (Exe, or this test binary)
// with -s StateDir and args.
func (e *Env) Command(args ...string) *exec.Cmd {
	argv := append([]string{"-s", e.StateDir}, e.Args...)
	cmd := exec.Command(e.exe(), append(argv, args...)...)
	cmd.Env = append(os.Environ(), EnvMain+"=1")
	return cmd
}

// exe is the multimodule binary: Exe, or this test binary.
func (e *Env) exe() string {
	if e.Exe != "" {
		return e.Exe
	}
	exe, err := os.Executable()
	if err != nil {
		e.T.Fatalf("mmtest: os.Executable: %v", err)
	}
	return exe
}

// Run runs multimodule with args to completion and returns its stdout,
// stderr and exit code.
func (e *Env) Run(args ...string) (stdout, stderr string, code int) {
	e.T.Helper()
	cmd := e.Command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			e.T.Fatalf("mmtest: run %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// Proc is a process the harness started.
type Proc struct {
	Cmd    *exec.Cmd
	Stdout *Buffer
	Stderr *Buffer
	done   chan struct{}
	err    error
}

// Start starts multimodule with args in the background.
func (e *Env) Start(args ...string) *Proc {
	e.T.Helper()
	cmd := e.Command(args...)
	p := &Proc{Cmd: cmd, Stdout: &Buffer{}, Stderr: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if err := cmd.Start(); err != nil {
		e.T.Fatalf("mmtest: start %v: %v", args, err)
	}
	e.tracker.started(cmd.Process.Pid)
	go func() { p.err = cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p
}

// StartDaemon starts a daemon with args and waits until it is ready (its
// main.status names its pid).
func (e *Env) StartDaemon(args ...string) *Proc {
	e.T.Helper()
	p := e.Start(args...)
	e.Eventually(30*time.Second, func() error {
		if p.Exited() {
			return fmt.Errorf("daemon exited early (%v); stderr:\n%s", p.err, p.Stderr)
		}
		st, err := store.Open(e.StateDir)
		if err != nil {
			return err
		}
		s, err := st.LoadStatus("main")
		if err != nil || s == nil {
			return fmt.Errorf("no main.status yet (%v)", err)
		}
		if s.PID != p.Cmd.Process.Pid {
			return fmt.Errorf("main.status names pid %d, daemon is %d", s.PID, p.Cmd.Process.Pid)
		}
		return nil
	})
	return p
}

// PID is the process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to end and returns its exit
// code (-1 if killed by a signal); it fails the test on timeout.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("mmtest: process %d did not exit within %v; stderr:\n%s", p.PID(), timeout, p.Stderr)
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Kill kills the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// WaitOutput waits until the process' stdout has a line matching re and
// returns it.
func (p *Proc) WaitOutput(t testing.TB, re string, timeout time.Duration) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var line string
	deadline := time.Now().Add(timeout)
	for {
		if m := rx.FindString(p.Stdout.String()); m != "" {
			line = m
			return line
		}
		if time.Now().After(deadline) {
			t.Fatalf("mmtest: no stdout line matching %q within %v; stdout:\n%s\nstderr:\n%s", re, timeout, p.Stdout, p.Stderr)
		}
		if !p.Stdout.WaitChange(time.Until(deadline)) && p.Exited() {
			if m := rx.FindString(p.Stdout.String()); m != "" {
				return m
			}
			t.Fatalf("mmtest: process exited (%v) before printing %q; stdout:\n%s\nstderr:\n%s", p.err, re, p.Stdout, p.Stderr)
		}
	}
}

// Client returns a transit client on the Env's bus (started if needed),
// closed at cleanup.
func (e *Env) Client() *transit.Transit {
	e.T.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.client != nil {
		return e.client
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := transit.Options{
		StateDir:   e.StateDir,
		BusCommand: []string{e.exe(), "bus", "-T", filepath.Join(e.StateDir, "transit")},
	}
	if e.Bus.NATSURL != "" {
		opts = e.Bus
	}
	tr, err := transit.Open(ctx, opts)
	if err != nil {
		e.T.Fatalf("mmtest: open transit: %v", err)
	}
	e.client = tr
	return tr
}

// Send sends msg to queue qname through the bus and fails the test on
// error.
func (e *Env) Send(qname string, msg message.Message) {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Client().Send(ctx, qname, msg, transit.SendOptions{}); err != nil {
		e.T.Fatalf("mmtest: send to %s: %v", qname, err)
	}
}

// Recv receives one message from queue qname, failing the test if none
// arrives within timeout.
func (e *Env) Recv(qname string, timeout time.Duration) message.Message {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, err := e.Client().Receive(ctx, qname)
	if err != nil {
		e.T.Fatalf("mmtest: receive from %s: %v", qname, err)
	}
	return m
}

// Configure sends a config (task → config) to the daemon's control queue.
func (e *Env) Configure(cfg map[string]any) {
	e.T.Helper()
	e.Send("MultiModule_control", message.Message{".multimodule": map[string]any{"config": cfg}})
}

// Store opens the Env's state directory.
func (e *Env) Store() *store.Store {
	e.T.Helper()
	st, err := store.Open(e.StateDir)
	if err != nil {
		e.T.Fatalf("mmtest: open store: %v", err)
	}
	return st
}

// Eventually polls f until it returns nil, failing the test with f's last
// error after timeout.
func (e *Env) Eventually(timeout time.Duration, f func() error) {
	e.T.Helper()
	Eventually(e.T, timeout, f)
}

// Eventually polls f (starting at once, backing off from 1 ms to 50 ms)
// until it returns nil; after timeout it fails t with f's last error.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(wait) // polling interval, not synchronisation: the deadline decides
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// Processes returns the processes of the Env's state directory running
// now — the ones whose command line names it (daemons, external
// processes, the bus) and their descendants (exec co-processes) — as
// pid → command line.
func (e *Env) Processes() map[int]string {
	out := map[int]string{}
	for pid, p := range belonging(listProcs(), e.StateDir) {
		if !p.zombie() {
			out[pid] = p.cmdline
		}
	}
	return out
}

// cleanupTimeout bounds the clean-up's killing of a test's processes.
const cleanupTimeout = 15 * time.Second

func (e *Env) cleanup() {
	e.mu.Lock()
	procs := e.procs
	client := e.client
	e.client = nil
	e.mu.Unlock()
	// Note what runs before killing anything: a process that dies is
	// a zombie with no command line, and only known ones are reaped.
	e.tracker.observe(listProcs())
	// The client first: it would start a new bus when the bus goes away.
	if client != nil {
		_ = client.Close()
	}
	for _, p := range procs {
		if !p.Exited() {
			_ = p.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
	// The externals and the bus its state directory records (the
	// transport directory may lie elsewhere) ...
	expected := map[int]bool{}
	kill := func(id procid.Identity) {
		if id.PID > 0 && id.PID != self && id.Alive() {
			expected[id.PID] = true
			_ = syscall.Kill(id.PID, syscall.SIGKILL)
		}
	}
	if st, err := store.Open(e.StateDir); err == nil {
		if names, err := st.Tasks(); err == nil {
			for _, name := range names {
				if s, err := st.LoadStatus(name); err == nil && s != nil && s.External {
					kill(s.Identity())
				}
			}
		}
	}
	if bi, err := transit.ReadBusInfo(filepath.Join(e.StateDir, "transit")); err == nil {
		kill(procid.Identity{PID: bi.PID, StartTime: bi.StartTime})
	}
	// ... and everything else that names the directory, with descendants.
	killed, left := e.tracker.killAll(cleanupTimeout)
	for _, p := range killed {
		if !expected[p.pid] {
			e.T.Logf("mmtest: killed a leftover process of the test: %v", p)
		}
	}
	if len(left) > 0 {
		e.T.Errorf("mmtest: processes of the test still running after %v: %v", cleanupTimeout, left)
	}
}

// Buffer is a goroutine-safe bytes.Buffer that can wait for new writes.
type Buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return n, err
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the complete lines written so far.
func (b *Buffer) Lines() []string {
	s := b.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// WaitChange waits up to d for a write; it reports whether one happened.
func (b *Buffer) WaitChange(d time.Duration) bool {
	b.mu.Lock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	ch := b.changed
	b.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-time.After(min(d, 100*time.Millisecond)):
		return false
	}
}
