// Package newcomer runs what a newcomer does on a fresh machine with only
// Go installed: clone the repository, build with empty module and build
// caches, run the tutorial as docs/tutorial.md tells, make the usual
// mistakes, stop everything — and checks that each step answers as the
// docs say, that a read-only command creates nothing, and that no process
// of ours is left running at the end.
//
// The clone is of the committed HEAD of this checkout (uncommitted changes
// are not in it). The build downloads every module through the module
// proxy (GOPROXY as set) into a fresh module cache: it takes a minute or
// two, so the test is skipped in -short mode.
package newcomer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// wait bounds every step that waits for something to happen.
const wait = 60 * time.Second

func TestNewcomer(t *testing.T) {
	if testing.Short() {
		t.Skip("clones and builds from empty caches; skipped in -short mode")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	clone := filepath.Join(work, "multimodule")
	run(t, work, nil, "git", "clone", "--quiet", "--no-hardlinks", root, clone)

	// Empty caches: the module cache is made writable so that the test's
	// clean-up can remove it.
	goEnv := []string{
		"GOCACHE=" + filepath.Join(work, "gocache"),
		"GOMODCACHE=" + filepath.Join(work, "gomodcache"),
		"GOFLAGS=-modcacherw",
		"GOWORK=off",
	}
	mm := filepath.Join(work, "bin", "multimodule")
	run(t, clone, goEnv, "go", "build", "-o", mm, "./cmd/multimodule")
	t.Cleanup(func() { killAll(t, mm) })

	// A read-only command with a mistyped -s: an answer, status 2, and no
	// state directory made.
	out := runExit(t, clone, 2, mm, "-s", "./stat", "status")
	mustMatch(t, out, `no daemon and no bus under \./stat \(start one with multimodule -s \./stat …\)`)
	if _, err := os.Stat(filepath.Join(clone, "stat")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("status created ./stat (stat: %v)", err)
	}
	// A daemon with a forgotten -p for the tutorial's config: it starts,
	// and config apply says which -p is missing, with status 1 (below).
	// A daemon with an unknown namespace or a missing config: status 1,
	// nothing made.
	out = runExit(t, clone, 1, mm, "-s", "./state", "-p", "NoSuchNamespace")
	mustMatch(t, out, `-p NoSuchNamespace: no such task namespace`)
	out = runExit(t, clone, 1, mm, "-s", "./state", "-c", "no-such.yaml")
	mustMatch(t, out, `not started: the config file \(-c\) must load: .*no-such\.yaml`)
	if _, err := os.Stat(filepath.Join(clone, "state")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a daemon that did not start created ./state (stat: %v)", err)
	}
	noProcs(t, mm)

	// The tutorial: copy the config, start, a line per second.
	cfg, err := os.ReadFile(filepath.Join(clone, "examples", "tutorial.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, "my-tutorial.yaml"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	tutorial := []string{"-p", "MultiModuleTest", "-c", "my-tutorial.yaml", "-s", "./state"}
	d := start(t, clone, mm, tutorial...)
	first := d.lineCount(t, 3)
	d.interrupt(t)

	// Start again: the count continues.
	d = start(t, clone, mm, tutorial...)
	if next := d.lineCount(t, 1); next < first+1 {
		t.Fatalf("after a restart the count went on at %d, want more than %d", next, first)
	}
	// Make the count jump.
	runExit(t, clone, 0, mm, "-s", "./state", "send", "Example1", `{"new_ct":999}`)
	d.waitLine(t, regexp.MustCompile(`^Example2: received a message: 999 \(howdy\)$`))
	// A mistake in a config sent to the running daemon: a task no -p
	// has. The verdict says so and exits 1; the daemon runs on.
	if err := os.WriteFile(filepath.Join(clone, "typo.yaml"), []byte("Exampel1:\n  outstr: hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = runExit(t, clone, 1, mm, "-s", "./state", "config", "apply", "typo.yaml")
	mustMatch(t, out, `Exampel1: .*unknown task: no task Exampel1 in builtin, MultiModuleTest`)
	// send without a message, recv that times out.
	out = runExit(t, clone, 1, mm, "-s", "./state", "send", "Example1")
	mustMatch(t, out, `send: no message for queue "Example1"`)
	out = runExit(t, clone, 1, mm, "-s", "./state", "recv", "nothing_here", "--timeout", "1s")
	mustMatch(t, out, `no message within 1s`)
	// status while it runs.
	out = runExit(t, clone, 0, mm, "-s", "./state", "status")
	mustMatch(t, out, `(?m)^daemon: running, pid \d+$`)
	mustMatch(t, out, `(?m)^Example1 +internal +\d+ +true`)

	// Stop everything: the daemon, then the bus. Nothing of ours runs
	// afterwards.
	out = runExit(t, clone, 0, mm, "-s", "./state", "stop")
	mustMatch(t, out, `(?m)^daemon \(pid \d+\): stopped$`)
	mustMatch(t, out, `(?m)^bus \(pid \d+\): stopped$`)
	d.waitExit(t, 0)
	noProcs(t, mm)
}

// run runs a command in dir and fails the test if it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// runExit runs the multimodule command mm in dir, checks its exit status
// and returns its output (stdout and stderr).
func runExit(t *testing.T, dir string, want int, mm string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, mm, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("multimodule %s: %v", strings.Join(args, " "), err)
	}
	if code != want {
		t.Fatalf("multimodule %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return string(out)
}

func mustMatch(t *testing.T, out, re string) {
	t.Helper()
	if !regexp.MustCompile(re).MatchString(out) {
		t.Fatalf("output:\n%s\nwant it to match %q", out, re)
	}
}

// daemon is the tutorial's daemon, its output read line by line.
type daemon struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	mu    sync.Mutex
	all   bytes.Buffer
}

func start(t *testing.T, dir, mm string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(mm, args...)
	cmd.Dir = dir
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.mu.Lock()
			d.all.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			select {
			case d.lines <- sc.Text():
			default:
			}
		}
		close(d.lines)
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.done
	})
	return d
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.all.String()
}

// waitLine waits for a line matching re and returns its submatches.
func (d *daemon) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				t.Fatalf("the daemon ended before printing a line matching %q; output:\n%s", re, d.output())
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no line matching %q within %v; output:\n%s", re, wait, d.output())
		}
	}
}

var counted = regexp.MustCompile(`^Example2: received a message: (\d+) \(howdy\)$`)

// lineCount waits for n tutorial lines and returns the last count.
func (d *daemon) lineCount(t *testing.T, n int) int {
	t.Helper()
	last := -1
	for range n {
		m := d.waitLine(t, counted)
		ct, _ := strconv.Atoi(m[1])
		if last >= 0 && ct != last+1 {
			t.Fatalf("count %d after %d, want one more", ct, last)
		}
		last = ct
	}
	return last
}

// interrupt is Ctrl-C: the daemon saves its state and exits 0.
func (d *daemon) interrupt(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	d.waitExit(t, 0)
}

func (d *daemon) waitExit(t *testing.T, want int) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(wait):
		t.Fatalf("the daemon did not exit within %v; output:\n%s", wait, d.output())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != want {
		t.Fatalf("the daemon exited %d, want %d; output:\n%s", code, want, d.output())
	}
}

// ours returns the live processes running the binary mm.
func ours(mm string) map[int]string {
	out := map[int]string{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil || exe != mm {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			continue // exited, not reaped yet
		}
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		pid, _ := strconv.Atoi(filepath.Base(dir))
		out[pid] = strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " ")
	}
	return out
}

// noProcs waits (bounded) until no process runs mm.
func noProcs(t *testing.T, mm string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		left := ours(mm)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of ours still running after %v: %v", wait, fmt.Sprint(left))
		}
		time.Sleep(50 * time.Millisecond) // polling /proc: there is no event for "no such process"
	}
}

// killAll kills every process of mm that is left (after a failure).
func killAll(t *testing.T, mm string) {
	for pid := range ours(mm) {
		t.Logf("killing a process left running: %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
