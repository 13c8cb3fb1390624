package store

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// wantAlreadyRunning checks err is an *AlreadyRunningError naming pid.
func wantAlreadyRunning(t *testing.T, err error, pid int) {
	t.Helper()
	var are *AlreadyRunningError
	if !errors.As(err, &are) {
		t.Fatalf("LockDaemon: got %v, want an *AlreadyRunningError", err)
	}
	if are.PID != pid {
		t.Errorf("AlreadyRunningError.PID: got %d, want %d", are.PID, pid)
	}
	if want := "already running under " + strconv.Itoa(pid); err.Error() != want {
		t.Errorf("error text: got %q, want %q", err.Error(), want)
	}
}

func TestLockDaemonInProcess(t *testing.T) {
	s := openStore(t)
	release, err := s.LockDaemon()
	if err != nil {
		t.Fatalf("first LockDaemon: %v", err)
	}
	if got := strings.TrimSpace(string(readRaw(t, s.Dir()+"/"+LockFileName))); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file: got %q, want our pid %d", got, os.Getpid())
	}
	// A second Store on the same directory is another would-be daemon.
	s2, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.LockDaemon()
	wantAlreadyRunning(t, err, os.Getpid())

	for i := range 2 { // idempotent
		if err := release(); err != nil {
			t.Fatalf("release #%d: %v", i+1, err)
		}
	}
	release2, err := s2.LockDaemon()
	if err != nil {
		t.Fatalf("LockDaemon after release: %v", err)
	}
	if err := release2(); err != nil {
		t.Fatal(err)
	}
	if got := readRaw(t, s.Dir()+"/"+LockFileName); len(got) != 0 {
		t.Errorf("lock file after release: got %q, want empty", got)
	}
}

func TestLockDaemonOtherProcessHolds(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, h *helper) // ends the holder's claim
	}{
		{"holder releases", func(t *testing.T, h *helper) {
			if code := h.wait(t); code != 0 {
				t.Fatalf("holder exited %d, want 0", code)
			}
		}},
		{"holder is SIGKILLed", func(t *testing.T, h *helper) {
			if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			h.wait(t)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			h := startHelper(t, "hold", s.Dir())
			h.expect(t, "locked")

			_, err := s.LockDaemon()
			wantAlreadyRunning(t, err, h.cmd.Process.Pid)

			tt.end(t, h)
			release, err := s.LockDaemon()
			if err != nil {
				t.Fatalf("LockDaemon after the holder is gone: %v", err)
			}
			if err := release(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLockDaemonWeHoldOtherProcessTries(t *testing.T) {
	s := openStore(t)
	release, err := s.LockDaemon()
	if err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "try", s.Dir())
	want := "already running under " + strconv.Itoa(os.Getpid())
	if line := h.expect(t, "already"); line != want {
		t.Errorf("other process said %q, want %q", line, want)
	}
	if code := h.wait(t); code != 3 {
		t.Errorf("other process exit code: got %d, want 3", code)
	}

	if err := release(); err != nil {
		t.Fatal(err)
	}
	h = startHelper(t, "try", s.Dir())
	h.expect(t, "locked")
	if code := h.wait(t); code != 0 {
		t.Errorf("other process after release: exit code %d, want 0", code)
	}
}

// TestLockNotInheritedByChildren: processes the daemon starts (external
// tasks) outlive it and must not keep the state directory locked.
func TestLockNotInheritedByChildren(t *testing.T) {
	s := openStore(t)
	h := startHelper(t, "hold-spawn", s.Dir())
	line := h.expect(t, "child ")
	child, err := strconv.Atoi(strings.TrimPrefix(line, "child "))
	if err != nil {
		t.Fatalf("bad child line %q", line)
	}
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	h.expect(t, "locked")

	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.wait(t)
	if err := syscall.Kill(child, 0); err != nil {
		t.Fatalf("the holder's child should still run: %v", err)
	}
	release, err := s.LockDaemon()
	if err != nil {
		t.Fatalf("LockDaemon while the dead holder's child runs: %v", err)
	}
	release()
}

// TestAlreadyRunningUnknownPID: a holder that never wrote its pid is
// still reported, after a bounded wait.
func TestAlreadyRunningUnknownPID(t *testing.T) {
	s := openStore(t)
	release, err := s.LockDaemon()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := os.Truncate(s.Dir()+"/"+LockFileName, 0); err != nil {
		t.Fatal(err)
	}
	_, err = s.LockDaemon()
	var are *AlreadyRunningError
	if !errors.As(err, &are) || are.PID != 0 || err.Error() != "already running under an unknown pid" {
		t.Errorf("LockDaemon: got %v, want an AlreadyRunningError with an unknown pid", err)
	}
}
