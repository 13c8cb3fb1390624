package supervise

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/procid"
)

// assertReaped fails unless no process with id exists any more, not even a
// zombie: the pid is free or names a newer process.
func assertReaped(t *testing.T, id procid.Identity) {
	t.Helper()
	now, err := procid.Of(id.PID)
	if err == nil && now.StartTime == id.StartTime {
		t.Errorf("%v after Done: still in the process table (a zombie?), want reaped", id)
	} else if err != nil && !errors.Is(err, procid.ErrNoProcess) {
		t.Errorf("procid.Of(%d) after Done: %v", id.PID, err)
	}
	if id.Alive() {
		t.Errorf("%v.Alive() after Done: got true, want false", id)
	}
}

func TestStartExitStatus(t *testing.T) {
	tests := []struct {
		name         string
		argv         []string
		wantCode     int
		wantSignaled bool
	}{
		{"exit 0", []string{"sh", "-c", "exit 0"}, 0, false},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3, false},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, int(syscall.SIGKILL), true},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, int(syscall.SIGTERM), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, Spec{Argv: tt.argv})
			waitDone(t, p, "exiting child")
			code, signaled, known := p.ExitStatus()
			if !known {
				t.Fatalf("ExitStatus known: got false, want true for our own child")
			}
			if code != tt.wantCode || signaled != tt.wantSignaled {
				t.Errorf("ExitStatus: got code %d signaled %v, want code %d signaled %v", code, signaled, tt.wantCode, tt.wantSignaled)
			}
			assertReaped(t, p.Identity())
			if got := p.RanFor(); got <= 0 {
				t.Errorf("RanFor after exit: got %v, want > 0", got)
			}
		})
	}
}

func TestStartIdentity(t *testing.T) {
	p := start(t, Spec{Argv: []string{"sleep", "100"}})
	id := p.Identity()
	now, err := procid.Of(id.PID)
	if err != nil {
		t.Fatalf("procid.Of(%d): %v", id.PID, err)
	}
	if id.StartTime != now.StartTime {
		t.Errorf("Identity().StartTime: got %d, want %d", id.StartTime, now.StartTime)
	}
	if want := []string{"sleep", "100"}; !slices.Equal(id.Cmdline, want) {
		t.Errorf("Identity().Cmdline: got %q, want %q", id.Cmdline, want)
	}
	if !id.Alive() {
		t.Errorf("Identity().Alive() of a running child: got false, want true")
	}
	if isDone(p) {
		t.Errorf("Done of a running child: closed, want open")
	}
	if _, _, known := p.ExitStatus(); known {
		t.Errorf("ExitStatus known while running: got true, want false")
	}
	id.Cmdline[0] = "changed"
	if got := p.Identity().Cmdline[0]; got != "sleep" {
		t.Errorf("Identity() after changing a returned copy: got Cmdline[0] %q, want %q", got, "sleep")
	}
}

func TestStartDetached(t *testing.T) {
	p := start(t, Spec{Argv: []string{"sleep", "100"}})
	pid := p.Identity().PID
	sid, err := unix.Getsid(pid)
	if err != nil {
		t.Fatalf("getsid(%d): %v", pid, err)
	}
	if sid != pid {
		t.Errorf("getsid(child): got %d, want %d (its own session)", sid, pid)
	}
	if ours, _ := unix.Getsid(0); sid == ours {
		t.Errorf("getsid(child): got %d, the test's own session, want a new one", sid)
	}
	pgid, err := unix.Getpgid(pid)
	if err != nil {
		t.Fatalf("getpgid(%d): %v", pid, err)
	}
	if pgid != pid {
		t.Errorf("getpgid(child): got %d, want %d (its own process group)", pgid, pid)
	}
}

func TestStartOutputEnvDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SUPERVISE_TEST_INHERITED", "inherited")
	tests := []struct {
		name   string
		spec   Spec
		before string // log content before the start
		want   string // log content after the exit
	}{
		{
			name:   "stdout and stderr appended",
			spec:   Spec{Argv: []string{"sh", "-c", "echo out; echo err >&2"}},
			before: "earlier run\n",
			want:   "earlier run\nout\nerr\n",
		},
		{
			name: "stdin is /dev/null",
			spec: Spec{Argv: []string{"sh", "-c", "readlink /proc/self/fd/0"}},
			want: "/dev/null\n",
		},
		{
			name: "nil Env inherits",
			spec: Spec{Argv: []string{"sh", "-c", `echo "$SUPERVISE_TEST_INHERITED"`}},
			want: "inherited\n",
		},
		{
			name: "Env replaces",
			spec: Spec{Argv: []string{"sh", "-c", `echo "$FOO/$SUPERVISE_TEST_INHERITED"`}, Env: []string{"FOO=bar"}},
			want: "bar/\n",
		},
		{
			name: "Dir",
			spec: Spec{Argv: []string{"sh", "-c", "pwd"}, Dir: dir},
			want: dir + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.LogPath = filepath.Join(t.TempDir(), "task.log")
			if tt.before != "" {
				if err := os.WriteFile(tt.spec.LogPath, []byte(tt.before), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			p := start(t, tt.spec)
			waitDone(t, p, "child")
			if code, _, _ := p.ExitStatus(); code != 0 {
				t.Errorf("exit code: got %d, want 0", code)
			}
			got, err := os.ReadFile(tt.spec.LogPath)
			if err != nil {
				t.Fatalf("read log: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("log: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStartLogCreated0600(t *testing.T) {
	log := filepath.Join(t.TempDir(), "task.log")
	p := start(t, Spec{Argv: []string{"true"}, LogPath: log})
	waitDone(t, p, "child")
	fi, err := os.Stat(log)
	if err != nil {
		t.Fatalf("stat log: %v", err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("log mode: got %v, want %v", got, os.FileMode(0o600))
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		spec Spec
		want string // in the error
	}{
		{"no argv", Spec{}, "empty Argv"},
		{"empty argv[0]", Spec{Argv: []string{""}}, "empty Argv"},
		{"no such executable", Spec{Argv: []string{"/nonexistent/prog"}}, `"/nonexistent/prog"`},
		{"not in PATH", Spec{Argv: []string{"supervise-test-no-such-program"}}, "executable file not found"},
		{"log directory missing", Spec{Argv: []string{"true"}, LogPath: filepath.Join(dir, "missing", "task.log")}, "open log"},
		{"working directory missing", Spec{Argv: []string{"true"}, Dir: filepath.Join(dir, "missing")}, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Start(tt.spec)
			if err == nil {
				t.Cleanup(func() { kill(t, p) })
				t.Fatalf("Start: got no error, want one containing %q", tt.want)
			}
			if p != nil {
				t.Errorf("Start: got a Process with the error %v, want nil", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSignalStarted(t *testing.T) {
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGKILL", syscall.SIGKILL},
		{"SIGTERM", syscall.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, Spec{Argv: []string{"sleep", "100"}})
			if err := p.Signal(tt.sig); err != nil {
				t.Fatalf("Signal(%v): %v", tt.sig, err)
			}
			waitDone(t, p, "signalled child")
			code, signaled, known := p.ExitStatus()
			if !known || !signaled || code != int(tt.sig) {
				t.Errorf("ExitStatus: got (%d, %v, %v), want (%d, true, true)", code, signaled, known, int(tt.sig))
			}
			assertReaped(t, p.Identity())
		})
	}
}
