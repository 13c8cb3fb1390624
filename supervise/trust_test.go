package supervise

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/trust"
	"github.com/multimodule/multimodule/trust/trusttest"
)

// started starts cmd (a `sleep`, or `flock … sleep`), kills and reaps it
// at the end of the test, and returns its identity once its command line
// is there.
func started(t *testing.T, cmd *exec.Cmd) procid.Identity {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var id procid.Identity
	waitFor(t, "the command line of "+strings.Join(cmd.Args, " "), func() bool {
		var err error
		id, err = procid.Of(cmd.Process.Pid)
		if err != nil {
			t.Fatalf("procid.Of: %v", err)
		}
		return len(id.Cmdline) > 0
	})
	return id
}

// TestAdoptOnlyOurs: a status file names a live process, but Adopt takes
// it on only when it runs as us, has the expected command line and holds
// the expected lock; any other process (a root `sleep` an attacker named
// in a planted status, say) is refused with ErrNotOurs and never
// signalled.
func TestAdoptOnlyOurs(t *testing.T) {
	lock := filepath.Join(t.TempDir(), "Ext.lock")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	want := Expect{ArgvSuffix: []string{"sleep", "100"}, LockPath: lock}

	ours := started(t, exec.Command("flock", lock, "sleep", "100"))
	waitFor(t, "flock to hold the lock", func() bool {
		held, err := procid.HoldsFlock(ours.PID, lock)
		return err == nil && held
	})
	p, err := Adopt(ours, want)
	if err != nil {
		t.Fatalf("Adopt(the lock holder): %v", err)
	}
	_ = p

	refuse := func(what string, id procid.Identity, want Expect, says string) {
		t.Helper()
		p, err := Adopt(id, want)
		if !errors.Is(err, ErrNotOurs) || p != nil || !strings.Contains(err.Error(), says) {
			t.Errorf("Adopt(%s): got %v, %v, want nil and an ErrNotOurs saying %q", what, p, err, says)
		}
		if !id.Alive() {
			t.Errorf("Adopt(%s): the process is gone, want it untouched", what)
		}
	}
	mine := started(t, exec.Command("sleep", "100"))
	refuse("another command line", mine, Expect{ArgvSuffix: []string{"-m", "Ext"}}, `does not end with ["-m" "Ext"]`)
	refuse("no lock held", mine, Expect{LockPath: lock}, "does not hold the lock "+lock)

	trusttest.Nobody(t)
	theirs := started(t, trusttest.Command(t, "sleep", "100"))
	refuse("another user's process", theirs, Expect{}, "it runs as uid")
}

// TestStartLogNotFollowed: a task's log that is a symbolic link, or a
// file another user owns, is refused: the process is not started and
// nothing is appended to what the link names.
func TestStartLogNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "Ext.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	p, err := Start(Spec{Argv: []string{"echo", "appended"}, LogPath: link})
	if err == nil {
		waitDone(t, p, "echo")
		t.Fatal("Start with a linked log: got no error")
	}
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("Start: got %v, want a refusal saying the log is a link", err)
	}
	if got, _ := os.ReadFile(target); string(got) != "keep me\n" {
		t.Errorf("link target: got %q, want it untouched", got)
	}

	trusttest.Nobody(t)
	theirs := filepath.Join(dir, "Other.log")
	if err := os.WriteFile(theirs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	trusttest.Chown(t, theirs)
	_, err = Start(Spec{Argv: []string{"echo", "appended"}, LogPath: theirs})
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is owned by nobody") {
		t.Errorf("Start with another user's log: got %v, want a refusal", err)
	}
}
