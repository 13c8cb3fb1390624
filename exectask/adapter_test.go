package exectask_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

const (
	examples = "../examples/exec"
	testdata = "testdata/tasks"
	broken   = "testdata/broken"
)

func TestExamplesEmitAndKeepState(t *testing.T) {
	for _, name := range []string{"PyCounter", "PerlCounter"} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			xt, tc := startTask(t, r, taskPath(t, examples, name), map[string]any{"increment_by": int64(2)}, map[string]any{"count": int64(40)})
			if !xt.HandshakeStateful() {
				t.Fatalf("got HandshakeStateful() false, want true (declared in the handshake)")
			}
			for ct := range 3 {
				if err := xt.Message(tc, message.Message{"ct": int64(ct)}); err != nil {
					t.Fatalf("message %d: %v", ct, err)
				}
			}
			emits := r.takeEmits()
			if len(emits) != 3 {
				t.Fatalf("got %d emits, want 3: %v", len(emits), emits)
			}
			for i, m := range emits {
				if got, want := intOf(t, m, "my_ct"), int64(i+2); got != want {
					t.Errorf("emit %d: got my_ct %d, want %d", i, got, want)
				}
				if got, want := intOf(t, m, "count"), int64(41+i); got != want {
					t.Errorf("emit %d: got count %d, want %d (continuing the given state)", i, got, want)
				}
				if m["source"] != name {
					t.Errorf("emit %d: got source %v, want %s", i, m["source"], name)
				}
				if got := intOf(t, m, "module_pid"); got != int64(xt.PID()) {
					t.Errorf("emit %d: got module_pid %d, want the co-process %d", i, got, xt.PID())
				}
			}
			if got := intOf(t, tc.State(), "count"); got != 43 {
				t.Errorf("host's state count: got %d, want 43", got)
			}
			// A bad config is refused by the task and reported as such.
			if err := xt.SetConfig(tc, map[string]any{"increment_by": "lots"}); err == nil {
				t.Errorf("bad config: got no error, want the task's refusal")
			}
			if err := xt.Message(tc, message.Message{"ct": int64(10)}); err != nil {
				t.Fatal(err)
			}
			if got := intOf(t, r.takeEmits()[0], "my_ct"); got != 12 {
				t.Errorf("after a refused config: got my_ct %d, want 12 (the previous config stays)", got)
			}
		})
	}
}

func TestShellEcho(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, examples, "ShellEcho"), map[string]any{}, nil)
	if xt.HandshakeStateful() {
		t.Fatalf("got HandshakeStateful() true, want false")
	}
	for _, m := range []message.Message{{"a": "x}y", "n": int64(1)}, {}} {
		if err := xt.Message(tc, m); err != nil {
			t.Fatal(err)
		}
	}
	emits := r.takeEmits()
	if len(emits) != 2 || emits[0]["a"] != "x}y" || emits[0]["seen_by"] != "ShellEcho" || emits[1]["seen_by"] != "ShellEcho" {
		t.Fatalf("got emits %v, want both messages back with seen_by", emits)
	}
}

// TestStateTransformReachesTask: when the host's copy of the state
// changes behind the task's back (an operator's transform), the task gets
// it before its next message.
func TestStateTransformReachesTask(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, examples, "PyCounter"), map[string]any{}, nil)
	if err := xt.Message(tc, message.Message{"ct": int64(1)}); err != nil {
		t.Fatal(err)
	}
	tc.State()["count"] = int64(999) // in place, as the host's transform does
	if err := xt.Message(tc, message.Message{"ct": int64(2)}); err != nil {
		t.Fatal(err)
	}
	emits := r.takeEmits()
	if got := intOf(t, emits[1], "count"); got != 1000 {
		t.Fatalf("got count %d after the state was set to 999, want 1000", got)
	}
}

func TestCrashRecovery(t *testing.T) {
	tests := []struct {
		name     string
		msg      func(dir string) message.Message
		wantErr  bool   // the message fails in the end
		wantOut  string // in the error channel
		wantEmit bool   // the message is handled (on the restarted co-process)
	}{
		{"dies once mid-message: retried on the new co-process", func(dir string) message.Message {
			return message.Message{"crash_once": filepath.Join(dir, "crashed")}
		}, false, "exit status 7", true},
		{"dies every time: reported after MaxAttempts", func(string) message.Message {
			return message.Message{"crash": true}
		}, true, "Probe: crashing as asked", false},
		{"garbage mid-stream: reported with the line", func(string) message.Message {
			return message.Message{"garbage": true}
		}, true, `"this is not json"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
			if err := xt.Message(tc, message.Message{"n": int64(1)}); err != nil {
				t.Fatal(err)
			}
			first := xt.PID()
			err := xt.Message(tc, tt.msg(t.TempDir()))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error: %v", err, tt.wantErr)
			}
			if tt.wantErr && !strings.Contains(err.Error(), fmt.Sprintf("after %d attempts", exectask.MaxAttempts)) {
				t.Errorf("got error %q, want it to say it gave up after %d attempts", err, exectask.MaxAttempts)
			}
			if out := r.outText(); !strings.Contains(out, tt.wantOut) || !strings.Contains(out, "restarting in") {
				t.Errorf("error channel:\n%s\nwant a crash report with %q", out, tt.wantOut)
			}
			emits := r.takeEmits()
			if got := len(emits) == 2; got != tt.wantEmit {
				t.Errorf("got emits %v, want the message handled: %v", emits, tt.wantEmit)
			}
			// The task goes on, on a new co-process, with its state.
			if err := xt.Message(tc, message.Message{"n": int64(3)}); err != nil {
				t.Fatalf("next message after the crash: %v", err)
			}
			if xt.PID() == first {
				t.Errorf("co-process pid %d: want a restarted one", first)
			}
			last := r.takeEmits()
			if want := int64(2); tt.wantEmit {
				want = 3
				if got := intOf(t, last[0], "count"); got != want {
					t.Errorf("got count %d, want %d (state kept across the crash)", got, want)
				}
			} else if got := intOf(t, last[0], "count"); got != want {
				t.Errorf("got count %d, want %d (state kept across the crash)", got, want)
			}
		})
	}
}

func TestKill9WhileIdle(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, examples, "PyCounter"), map[string]any{}, nil)
	if err := xt.Message(tc, message.Message{"ct": int64(0)}); err != nil {
		t.Fatal(err)
	}
	pid := xt.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := xt.Message(tc, message.Message{"ct": int64(1)}); err != nil {
		t.Fatalf("message after kill -9: %v", err)
	}
	emits := r.takeEmits()
	if len(emits) != 2 || intOf(t, emits[1], "count") != 2 {
		t.Fatalf("got emits %v, want 2 with the count going on", emits)
	}
	if !strings.Contains(r.outText(), "signal: killed") {
		t.Errorf("error channel:\n%s\nwant the kill reported", r.outText())
	}
}

func TestHandlerFailureIsNotACrash(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	pid := xt.PID()
	err := xt.Message(tc, message.Message{"fail": "no thanks"})
	if err == nil || !strings.Contains(err.Error(), "RuntimeError: no thanks") {
		t.Fatalf("got %v, want the task's own error", err)
	}
	if xt.PID() != pid {
		t.Errorf("co-process changed from %d to %d: a handler failure must not restart it", pid, xt.PID())
	}
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name string
		want []string
	}{
		{"Garbage", []string{"malformed line", `"hello, I am not JSON"`}},
		{"ExitsAtOnce", []string{"exit status 3", "during the handshake", "cannot find my config"}},
		{"Silent", []string{"no answer within 300ms during the handshake"}},
		{"FutureProtocol", []string{"no common protocol version", "[7]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := exectask.Start(exectask.Spec{Name: tt.name, Path: taskPath(t, broken, tt.name), HandshakeTimeout: 300 * time.Millisecond})
			if err == nil {
				t.Fatal("got no error, want a failed start")
			}
			for _, w := range append(tt.want, tt.name) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestMinimalEnvironment(t *testing.T) {
	t.Setenv("MULTIMODULE_TEST_SECRET", "hunter2")
	r := newRig(t)
	// A shell task: /proc/<pid>/environ is exactly what the host gave it
	// (an interpreter started through a wrapper may add its own).
	xt, _ := startTask(t, r, taskPath(t, examples, "ShellEcho"), map[string]any{}, nil)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", xt.PID()))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	allowed := []string{"PATH", "HOME", "LANG", exectask.EnvTask, exectask.EnvTaskDir, exectask.EnvProcess,
		exectask.EnvMode, exectask.EnvProtocol, exectask.EnvProtocols}
	for k := range env {
		if !slices.Contains(allowed, k) {
			t.Errorf("co-process environment has %s=%v; want only %v", k, env[k], allowed)
		}
	}
	dir, _ := filepath.Abs(examples)
	want := map[string]string{exectask.EnvTask: "ShellEcho", exectask.EnvMode: exectask.ModeRun, exectask.EnvProtocol: "2", exectask.EnvProtocols: "1,2",
		exectask.EnvProcess: "main", exectask.EnvTaskDir: dir, "PATH": os.Getenv("PATH")}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("got %s=%q, want %q", k, env[k], v)
		}
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", xt.PID()))
	if err != nil || cwd != dir {
		t.Errorf("got working directory %q (%v), want the task's directory %s", cwd, err, dir)
	}
}

func TestStderrGoesToLog(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	if err := xt.Message(tc, message.Message{"stderr": "a line for the log"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if !strings.Contains(r.logs.text(), "a line for the log") {
			return fmt.Errorf("log so far:\n%s", r.logs.text())
		}
		return nil
	})
}

func TestRecurTicks(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	work := probeTick(t, r, xt, tc, 0.5)
	work(tc)
	work(tc)
	emits := r.takeEmits()
	if len(emits) != 2 || intOf(t, emits[1], "tick") != 2 {
		t.Fatalf("got %v, want two tick emits", emits)
	}
	if got := intOf(t, tc.State(), "ticks"); got != 2 {
		t.Errorf("got state ticks %d, want 2", got)
	}
	// A del_recurs record stops every schedule of the task.
	if err := xt.Message(tc, message.Message{"del_recurs": true}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recurs) != 0 {
		t.Errorf("after del_recurs: got recurs %v, want none", r.recurs)
	}
}

func TestHungMessageTimesOut(t *testing.T) {
	r := newRig(t)
	xt, err := exectask.Start(exectask.Spec{Name: "Probe", Path: taskPath(t, testdata, "Probe"), Logger: r.log, MessageTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tc := task.NewContext("Probe", r)
	t.Cleanup(func() { _ = xt.Close(tc) })
	if err := xt.SetConfig(tc, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	err = xt.Message(tc, message.Message{"hang": true})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("after %d attempts", exectask.MaxAttempts)) {
		t.Fatalf("got %v, want the message given up after %d attempts", err, exectask.MaxAttempts)
	}
	// Each attempt's end is reported (the returned error is the last
	// one's, which on a loaded box can be a restart that failed instead).
	if out := r.outText(); !strings.Contains(out, "no answer within 300ms while handling message") {
		t.Fatalf("error channel:\n%s\nwant the timeout reported", out)
	}
}

func TestCloseStopsTheCoProcess(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, examples, "PyEcho"), map[string]any{}, nil)
	pid := xt.PID()
	if err := xt.Close(tc); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("co-process %d after Close: kill -0 gave %v, want ESRCH (gone)", pid, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Fatalf("co-process %d still in /proc after Close", pid)
	}
}
