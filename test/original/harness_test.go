// Package original runs the scenarios of the Perl App::MultiModule test
// suite (t/*.t) against the multimodule binary, driving it only through
// its command line, as an operator who has only the docs would: the daemon
// runs as a real process with its own state directory (and so its own
// embedded bus), messages go in with `multimodule send` and come out with
// `multimodule recv`, config goes in with `config apply` or a control
// message, and what the original read through its API is read with
// `multimodule status --json` or from the documented JSON files of the
// state directory. README.md maps every .t file to its test.
package original

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

// bin is the multimodule binary built once for the package.
var bin string

// ctlQ is the control queue every scenario's daemon uses (the original's
// `-q tqueue`).
const ctlQ = "tqueue"

// wait bounds every wait for something that must happen; the machine may
// be heavily loaded, so it is generous. Waits end as soon as the event
// happens.
const wait = 90 * time.Second

// quiet is how long a negative check waits for something that must NOT
// happen (a failsafed task must not answer).
const quiet = 5 * time.Second

func TestMain(m *testing.M) {
	flag.Parse()
	// The scenarios mostly wait on processes; run several at once unless
	// the caller chose -parallel.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "8")
	}
	dir, err := os.MkdirTemp("", "mm-original-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bin = filepath.Join(dir, "multimodule")
	build := exec.Command("go", "build", "-o", bin, "github.com/multimodule/multimodule/cmd/multimodule")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building multimodule:", err)
		_ = os.RemoveAll(dir)
		os.Exit(2)
	}
	stopReaper := startReaper()
	code := m.Run()
	stopReaper()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// Reaping. External task processes and the bus are started detached by
// the daemon; when a scenario kills the daemon (or it exits) they are
// orphans. The test process makes itself their subreaper so that they do
// not linger as zombies under a pid 1 that may never reap them, and
// reaps the orphans it adopted — never a process it started itself with
// os/exec (whose Wait reaps it).
var (
	ownMu sync.Mutex
	own   = map[int]bool{}
)

func startReaper() (stop func()) {
	const prSetChildSubreaper = 36
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	done := make(chan struct{})
	finished := make(chan struct{})
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-chld:
			case <-tick.C:
			}
			reapOrphans()
		}
	}()
	return func() { signal.Stop(chld); close(done); <-finished; reapOrphans() }
}

func reapOrphans() {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := procStat(pid)
		if !ok || st.ppid != self || (st.state != "Z" && st.state != "X") {
			continue
		}
		// Only orphans: the processes this one starts (daemons, CLI
		// commands) are in its session and their os/exec owners reap
		// them; externals and buses start sessions of their own.
		ownMu.Lock()
		mine := own[pid]
		ownMu.Unlock()
		if !mine && st.sid != selfSID {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

type stat struct {
	state string
	ppid  int
	sid   int
	start uint64
}

var selfSID = func() int {
	sid, _, _ := syscall.RawSyscall(syscall.SYS_GETSID, 0, 0, 0)
	return int(sid)
}()

// procStat reads /proc/<pid>/stat.
func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	sid, _ := strconv.Atoi(f[3])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return stat{state: f[0], ppid: ppid, sid: sid, start: start}, true
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, ok := procStat(pid)
	return ok && st.state != "Z" && st.state != "X"
}

// world is one scenario's MultiModule: a state directory, the daemons the
// scenario started in it, and everything they started (bus, externals),
// all stopped when the test ends.
type world struct {
	t       *testing.T
	dir     string
	daemons []*daemon

	incrNext atomic.Int64 // the next emit_ct expected on Incrementer_out
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, dir: filepath.Join(t.TempDir(), "state")}
	w.incrNext.Store(1)
	t.Cleanup(w.cleanup)
	return w
}

// daemon is a multimodule daemon process the scenario started.
type daemon struct {
	cmd  *exec.Cmd
	out  *syncBuf
	errb *syncBuf
	done chan struct{}
	err  error
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the daemon to end and returns its exit code.
func (d *daemon) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(within):
		t.Fatalf("daemon %d still running after %v; stderr:\n%s", d.pid(), within, d.errb.String())
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	if d.err != nil {
		t.Fatalf("daemon %d: %v", d.pid(), d.err)
	}
	return 0
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command returns `multimodule -s <state> args...`.
func (w *world) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, bin, append([]string{"-s", w.dir}, args...)...)
}

// run runs a multimodule command to completion.
func (w *world) run(args ...string) (stdout, stderr string, code int) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	cmd := w.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			w.t.Fatalf("multimodule %v: %v", args, err)
		}
		return out.String(), errb.String(), ee.ExitCode()
	}
	return out.String(), errb.String(), 0
}

// mm runs a multimodule command that must succeed and returns its stdout.
func (w *world) mm(args ...string) string {
	w.t.Helper()
	out, errs, code := w.run(args...)
	if code != 0 {
		w.t.Fatalf("multimodule %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// start starts a daemon with the original's `-q tqueue -p MultiModuleTest`
// and extra args, and waits until it is up (its main.status names it).
func (w *world) start(extra ...string) *daemon {
	w.t.Helper()
	return w.startArgs(append([]string{"-q", ctlQ, "-p", "MultiModuleTest"}, extra...)...)
}

// startArgs starts a daemon with exactly args (after -s) and waits until
// it is up.
func (w *world) startArgs(args ...string) *daemon {
	w.t.Helper()
	d := w.spawn(args...)
	w.eventually("daemon up", func() error {
		if d.exited() {
			return fmt.Errorf("daemon exited early (%v); stderr:\n%s", d.err, d.errb.String())
		}
		s, err := w.statusFile("main")
		if err != nil {
			return err
		}
		if pid, _ := message.Int(s["pid"]); int(pid) != d.pid() {
			return fmt.Errorf("main.status names pid %d, the daemon is %d", pid, d.pid())
		}
		return nil
	})
	return d
}

// spawn starts a daemon process and returns at once.
func (w *world) spawn(args ...string) *daemon {
	w.t.Helper()
	cmd := w.command(context.Background(), args...)
	d := &daemon{cmd: cmd, out: &syncBuf{}, errb: &syncBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.errb
	ownMu.Lock()
	defer ownMu.Unlock()
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("starting multimodule %v: %v", args, err)
	}
	own[cmd.Process.Pid] = true
	go func() {
		d.err = cmd.Wait()
		ownMu.Lock()
		delete(own, cmd.Process.Pid)
		ownMu.Unlock()
		close(d.done)
	}()
	w.daemons = append(w.daemons, d)
	return d
}

// eventually polls f until it returns nil, failing the test after wait.
func (w *world) eventually(what string, f func() error) {
	w.t.Helper()
	deadline := time.Now().Add(wait)
	sleep := 10 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not within %v: %v", what, wait, err)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 250*time.Millisecond)
	}
}

// send sends msg to queue q with `multimodule send`.
func (w *world) send(q string, msg any) {
	w.t.Helper()
	b, err := json.Marshal(msg)
	if err != nil {
		w.t.Fatalf("send to %s: %v", q, err)
	}
	w.mm("send", q, string(b))
}

// recv takes one message from q, waiting up to timeout; ok is false when
// none came.
func (w *world) recv(q string, timeout time.Duration) (msg map[string]any, ok bool) {
	w.t.Helper()
	out, errs, code := w.run("recv", "--timeout", timeout.String(), q)
	if code != 0 {
		if strings.TrimSpace(out) == "" {
			return nil, false
		}
		w.t.Fatalf("recv %s: exit %d: %s %s", q, code, out, errs)
	}
	return decode(w.t, out), true
}

// mustRecv takes one message from q or fails the test.
func (w *world) mustRecv(q string) map[string]any {
	w.t.Helper()
	m, ok := w.recv(q, wait)
	if !ok {
		w.t.Fatalf("no message on %s within %v", q, wait)
	}
	return m
}

// drain takes every message waiting on q now.
func (w *world) drain(q string) []map[string]any {
	w.t.Helper()
	out, errs, code := w.run("recv", "--nonblock", "--count", "100000", q)
	if code != 0 && strings.TrimSpace(out) == "" {
		if code == 1 && strings.Contains(errs, "is empty") {
			return nil
		}
		w.t.Fatalf("recv --nonblock %s: exit %d: %s", q, code, errs)
	}
	var msgs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			msgs = append(msgs, decode(w.t, sc.Text()))
		}
	}
	return msgs
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &m); err != nil {
		t.Fatalf("recv printed %q: %v", line, err)
	}
	return m
}

// cleanlyExit sends the original's cleanly_exit control message and waits
// for d to exit with status 0.
func (w *world) cleanlyExit(d *daemon, exitExternals bool) {
	w.t.Helper()
	ctl := map[string]any{"type": "cleanly_exit"}
	if exitExternals {
		ctl["exit_externals"] = 1
	}
	w.send(ctlQ, map[string]any{".multimodule": map[string]any{"control": []any{ctl}}})
	if code := d.waitExit(w.t, wait); code != 0 {
		w.t.Fatalf("daemon exited with %d after cleanly_exit, want 0; stderr:\n%s", code, d.errb.String())
	}
}

// statusAll is `multimodule status --json`. With no daemon running (a
// scenario that stopped it and left its externals) status still prints
// every task, and says so with status 2 (docs/operations.md).
func (w *world) statusAll() []map[string]any {
	w.t.Helper()
	out, stderr, code := w.run("status", "--json")
	if code != 0 && !(code == 2 && strings.Contains(stderr, "no daemon is running under")) {
		w.t.Fatalf("multimodule status --json: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		w.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return all
}

// status is the `status --json` line of task (nil if none).
func (w *world) status(task string) map[string]any {
	w.t.Helper()
	for _, s := range w.statusAll() {
		if s["task"] == task {
			return s
		}
	}
	return nil
}

// statusFile reads <state>/<task>.status (docs/state-dir.md).
func (w *world) statusFile(task string) (map[string]any, error) {
	return readJSON(filepath.Join(w.dir, task+".status"))
}

// stateFile reads <state>/<task>.state.
func (w *world) stateFile(task string) (map[string]any, error) {
	return readJSON(filepath.Join(w.dir, task+".state"))
}

// confFile reads <state>/<task>.conf.
func (w *world) confFile(task string) (map[string]any, error) {
	return readJSON(filepath.Join(w.dir, task+".conf"))
}

func readJSON(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// checkTaskStatus asserts what the original asserted of
// get_task_status(task): a pid that is the one that handled the message,
// and a save_ts not in the future (the original's `save_ts - time < 5`).
// It also asserts that `status` shows the task running. A task's status
// is written when it is loaded, for a task loaded in a burst of loads
// within 5 s (docs/state-dir.md), so this waits for it.
func (w *world) checkTaskStatus(task string, modulePID int) {
	w.t.Helper()
	w.eventually("status of "+task, func() error {
		s := w.status(task)
		if s == nil {
			return fmt.Errorf("status has no line for %s", task)
		}
		if pid := num(s["pid"]); int(pid) != modulePID || s["running"] != true {
			return fmt.Errorf("status of %s: %v, want pid %d (the pid that handled the message), running", task, s, modulePID)
		}
		f, err := w.statusFile(task)
		if err != nil {
			return err
		}
		if pid := num(f["pid"]); int(pid) != modulePID {
			return fmt.Errorf("%s.status: pid %v, want %d", task, f["pid"], modulePID)
		}
		if ts := num(f["save_ts"]); ts <= 0 || ts-float64(time.Now().Unix()) >= 5 {
			return fmt.Errorf("%s.status save_ts %v: want a time not in the future", task, f["save_ts"])
		}
		return nil
	})
}

// checkMainStatus asserts the original's get_task_status('main') checks.
func (w *world) checkMainStatus(d *daemon, modulePID int) {
	w.t.Helper()
	f, err := w.statusFile("main")
	if err != nil {
		w.t.Fatal(err)
	}
	if pid := int(num(f["pid"])); pid != modulePID || pid != d.pid() {
		w.t.Errorf("main.status pid %d, want %d (the daemon, which handled the message)", pid, modulePID)
	}
	if ts := num(f["save_ts"]); ts <= 0 || ts-float64(time.Now().Unix()) >= 5 {
		w.t.Errorf("main.status save_ts %v: want a time not in the future", f["save_ts"])
	}
}

// num reads a JSON number (or numeric string) as float64.
func num(v any) float64 {
	f, _ := message.Float(v)
	return f
}

// cleanup stops every process of the world: the daemons the scenario
// started, then the external task processes their status files name and
// the bus its bus.json names (checked by pid and start time), then any
// other process whose command line names this world's unique state
// directory (an external caught mid-start).
func (w *world) cleanup() {
	if w.t.Failed() {
		w.diagnose()
	}
	for _, d := range w.daemons {
		if !d.exited() {
			_ = d.cmd.Process.Signal(syscall.SIGKILL)
			<-d.done
		}
	}
	var pids []int
	matches, _ := filepath.Glob(filepath.Join(w.dir, "*.status"))
	for _, f := range matches {
		s, err := readJSON(f)
		if err != nil || s["is_external"] != true {
			continue
		}
		pid := int(num(s["pid"]))
		if st, ok := procStat(pid); ok && st.start == uint64(num(s["start_time"])) {
			pids = append(pids, pid)
		}
	}
	if bi, err := readJSON(filepath.Join(w.dir, "transit", "bus.json")); err == nil {
		pid := int(num(bi["pid"]))
		if st, ok := procStat(pid); ok && st.start == uint64(num(bi["start_time"])) {
			pids = append(pids, pid)
		}
	}
	pids = append(pids, namingDir(w.dir)...)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			reapOrphans()
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			w.t.Errorf("process %d of the scenario still running after clean-up", pid)
		}
	}
}

// namingDir lists the live processes (not this one) whose command line
// contains dir — a fresh temporary directory, so only this world's.
func namingDir(dir string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(b, []byte(dir)) && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// matches is the original's mmatch.
func matches(msg, pattern map[string]any) bool {
	ok, err := match.Match(message.Message(msg), pattern)
	return err == nil && ok
}

// stream is the original's App::MultiModule::Test::StatefulStream: it
// sends numbered messages carrying a unique match to a counter task
// (OtherModule, OtherExternalModule, …), whose config has a random
// increment_by and whose output the Router sends to <task>_out, and checks
// that they come back in order with my_ct = ct + increment_by, handled
// inside the daemon ("internal") or not ("external").
type stream struct {
	w         *world
	task      string
	out       string
	increment int64
	match     map[string]any
	nextID    int64
	sent      []sentMsg
	daemonPID func() int
}

type sentMsg struct{ id, ct int64 }

var streamSeq atomic.Int64

func (w *world) newStream(task string, d *daemon) *stream {
	return &stream{
		w:         w,
		task:      task,
		out:       task + "_out",
		increment: rand.Int64N(10000),
		match:     map[string]any{"this": rand.Int64N(10000), "that": streamSeq.Add(1) + 1},
		nextID:    1,
		daemonPID: func() int { return d.pid() },
	}
}

// route is the Router route that sends the stream's output to <task>_out.
func (s *stream) route() map[string]any {
	return map[string]any{"match": s.match, "forwards": []any{map[string]any{"qname": s.out}}}
}

// send sends the next message of the stream, with extras.
func (s *stream) send(extras map[string]any) {
	s.w.t.Helper()
	ct := rand.Int64N(10000)
	msg := map[string]any{}
	for k, v := range s.match {
		msg[k] = v
	}
	for k, v := range extras {
		msg[k] = v
	}
	msg["ct"], msg["id"] = ct, s.nextID
	s.sent = append(s.sent, sentMsg{id: s.nextID, ct: ct})
	s.nextID++
	s.w.send(s.task, msg)
}

// receive takes the next output of the stream and checks it (typ:
// "internal", "external" or ""; pattern: a match it must satisfy, or nil).
// Like the original, it first checks everything waiting on
// Incrementer_out. It fails the test if nothing comes within wait.
func (s *stream) receive(typ string, pattern map[string]any) map[string]any {
	s.w.t.Helper()
	m, err := s.tryReceive(typ, pattern, wait)
	if err != nil {
		s.w.t.Fatal(err)
	}
	return m
}

// tryReceive is receive returning an error when nothing comes within
// timeout (the sent message stays expected).
func (s *stream) tryReceive(typ string, pattern map[string]any, timeout time.Duration) (map[string]any, error) {
	s.w.t.Helper()
	s.w.checkIncrementer()
	if len(s.sent) == 0 {
		return nil, nil
	}
	m, ok := s.w.recv(s.out, timeout)
	if !ok {
		return nil, fmt.Errorf("%s: no message on %s within %v (waiting for id %d)", s.task, s.out, timeout, s.sent[0].id)
	}
	want := s.sent[0]
	s.sent = s.sent[1:]
	t := s.w.t
	if pattern != nil && !matches(m, pattern) {
		t.Errorf("%s: %v does not match %v", s.task, m, pattern)
	}
	if id := int64(num(m["id"])); id != want.id {
		t.Fatalf("%s: got id %d, want %d (lost or reordered): %v", s.task, id, want.id, m)
	}
	if ct := int64(num(m["ct"])); ct != want.ct {
		t.Errorf("%s: id %d: ct %d, want %d", s.task, want.id, ct, want.ct)
	}
	if my := int64(num(m["my_ct"])); my != want.ct+s.increment {
		t.Errorf("%s: id %d: my_ct %d, want %d + %d", s.task, want.id, my, want.ct, s.increment)
	}
	pid := int(num(m["module_pid"]))
	switch typ {
	case "external":
		if pid == s.daemonPID() {
			t.Errorf("%s: id %d handled by the daemon (pid %d), want an external process", s.task, want.id, pid)
		}
	case "internal":
		if pid != s.daemonPID() {
			t.Errorf("%s: id %d handled by pid %d, want the daemon %d", s.task, want.id, pid, s.daemonPID())
		}
	}
	return m, nil
}

// checkIncrementer checks, as the original's StatefulStream did, that the
// messages StatelessProducer made and Incrementer passed on reach
// Incrementer_out with consecutive emit_ct.
func (w *world) checkIncrementer() {
	w.t.Helper()
	for _, m := range w.drain("Incrementer_out") {
		want := w.incrNext.Add(1) - 1
		if ct := int64(num(m["emit_ct"])); ct != want {
			w.t.Errorf("Incrementer_out: emit_ct %d, want %d: %v", ct, want, m)
			w.incrNext.Store(ct + 1)
		}
	}
}

// producerRoutes are the original's routes for StatelessProducer and
// Incrementer.
func producerRoutes() []any {
	return []any{
		map[string]any{"match": map[string]any{"source": "Incrementer"}, "forwards": []any{map[string]any{"qname": "Incrementer_out"}}},
		map[string]any{"match": map[string]any{"source": "StatelessProducer"}, "forwards": []any{map[string]any{"qname": "Incrementer"}}},
	}
}

// wrapped is a config in the control-message form.
func wrapped(cfg map[string]any) map[string]any {
	return map[string]any{".multimodule": map[string]any{"config": cfg}}
}

// routes builds a Router config.
func routes(rs ...any) map[string]any {
	list := []any{}
	for _, r := range rs {
		switch r := r.(type) {
		case []any:
			list = append(list, r...)
		default:
			list = append(list, r)
		}
	}
	return map[string]any{"routes": list}
}

// fwd is a route sending what matches to qname.
func fwd(pattern map[string]any, qname string) map[string]any {
	return map[string]any{"match": pattern, "forwards": []any{map[string]any{"qname": qname}}}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// diagnose logs what a failed scenario's daemons said, and the status and
// queues of its world.
func (w *world) diagnose() {
	for _, d := range w.daemons {
		e := d.errb.String()
		if len(e) > 6000 {
			e = "…" + e[len(e)-6000:]
		}
		w.t.Logf("daemon %d stderr:\n%s", d.pid(), e)
	}
	for _, args := range [][]string{{"status"}, {"queues"}, {"recv", "--nonblock", "-n", "20", "MultiModule_dead_letter"}} {
		out, errs, _ := w.run(args...)
		w.t.Logf("multimodule %s:\n%s%s", strings.Join(args, " "), out, errs)
	}
}
