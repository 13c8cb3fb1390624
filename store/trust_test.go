package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/trust"
	"github.com/multimodule/multimodule/trust/trusttest"
)

// TestOpenRefusesLooseDir: a state directory others can write (or that
// another user owns, or that sits in a directory others can write) is
// refused with the fix; a private one in a sticky directory (/tmp) is
// fine.
func TestOpenRefusesLooseDir(t *testing.T) {
	for _, tt := range []struct {
		mode os.FileMode
		want string
	}{
		{0o777, "is writable by others (mode 0777): run chmod 700 "},
		{0o770, "is writable by its group (mode 0770): run chmod 700 "},
		{0o703, "is writable by others (mode 0703): run chmod 700 "},
	} {
		dir := filepath.Join(t.TempDir(), "st2")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir)
		if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "state dir "+dir+" "+tt.want+dir) {
			t.Errorf("Open(mode %04o): got %v, want %q", tt.mode, err, tt.want)
		}
	}
	t.Run("inside a directory others can write", func(t *testing.T) {
		parent := filepath.Join(t.TempDir(), "shared")
		if err := os.Mkdir(parent, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(parent, 0o777); err != nil {
			t.Fatal(err)
		}
		_, err := Open(filepath.Join(parent, "st"))
		if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "which is writable by others (mode 0777) without the sticky bit") {
			t.Errorf("Open: got %v, want a refusal naming %s", err, parent)
		}
	})
	t.Run("in a sticky directory", func(t *testing.T) {
		if _, err := Open(t.TempDir()); err != nil { // under /tmp: 1777
			t.Errorf("Open: %v", err)
		}
	})
	t.Run("owned by another user", func(t *testing.T) {
		dir := t.TempDir()
		trusttest.Chown(t, dir)
		_, err := Open(dir)
		if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is owned by nobody") || !strings.Contains(err.Error(), "chown ") {
			t.Errorf("Open: got %v, want a refusal saying it is owned by nobody, with the fix", err)
		}
	})
}

// TestOpenRefusesFilesOfOthers: another local user, while the state dir
// was open to them, planted a status (naming a process to adopt and
// kill), a failsafe and a link for a task's log. The next Open refuses
// the directory and names the files, even once the directory itself has
// been made private again.
func TestOpenRefusesFilesOfOthers(t *testing.T) {
	trusttest.Nobody(t)
	base := trusttest.TempDir(t)
	dir := filepath.Join(base, "st2")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	trusttest.Sh(t, `cd "$0" && echo '{"task":"Ext","pid":1,"start_time":1,"cmdline":["/sbin/init"],"is_external":true}' > Ext.status && echo '{}' > Ext.failsafe && ln -s /etc/passwd Ext.log`, dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("Open: got %v, want a refusal", err)
	}
	for _, want := range []string{
		"holds 3 file(s) that MultiModule did not write",
		filepath.Join(dir, "Ext.status") + " is owned by nobody",
		filepath.Join(dir, "Ext.failsafe") + " is owned by nobody",
		filepath.Join(dir, "Ext.log") + " is a symbolic link owned by nobody",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open: got %v, want it to say %q", err, want)
		}
	}
}

// TestFilesReadWithoutFollowingLinks: a task file that is a symbolic
// link is refused with an error saying so: nothing is read through it
// (not even its target's first byte), the link is not moved aside as
// corrupt, and the target is untouched.
func TestFilesReadWithoutFollowingLinks(t *testing.T) {
	s := openStore(t)
	target := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(target, []byte("root:$6$hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{confExt, stateExt, statusExt, failsafeExt} {
		link := filepath.Join(s.Dir(), "Example1"+ext)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, trust.ErrUntrusted) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want a refusal (not a corrupt file)", what, err)
			return
		}
		if !strings.Contains(err.Error(), "is a symbolic link: refused") || strings.Contains(err.Error(), "'r'") || strings.Contains(err.Error(), "$6$") {
			t.Errorf("%s: got %v, want it to say the file is a link, without any of the target's content", what, err)
		}
	}
	_, err := s.LoadConfig("Example1")
	check("LoadConfig", err)
	all, err := s.LoadAllConfigs()
	check("LoadAllConfigs", err)
	if len(all) != 0 {
		t.Errorf("LoadAllConfigs: got %v, want nothing", all)
	}
	_, err = s.LoadState("Example1")
	check("LoadState", err)
	_, err = s.LoadStatus("Example1")
	check("LoadStatus", err)
	alert, err := s.ReadFailsafe("Example1")
	check("ReadFailsafe", err)
	if alert == nil {
		t.Error("ReadFailsafe: got no alert, want a stand-in: the task stays failsafed")
	}
	for _, ext := range []string{confExt, stateExt, statusExt, failsafeExt} {
		if fi, err := os.Lstat(filepath.Join(s.Dir(), "Example1"+ext)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("Example1%s: got %v, want the link left where it is", ext, err)
		}
	}
	if got := readRaw(t, target); string(got) != "root:$6$hash\n" {
		t.Errorf("target: got %q, want it untouched", got)
	}
	// Saving replaces the link by a file: the target is never written.
	if err := s.SaveConfig("Example1", map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if got := readRaw(t, target); string(got) != "root:$6$hash\n" {
		t.Errorf("target after SaveConfig: got %q, want it untouched", got)
	}
}

// TestLockFileNotFollowed: a lock file that is a link (to a file the
// daemon could write) is refused, and its target not truncated.
func TestLockFileNotFollowed(t *testing.T) {
	s := openStore(t)
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(s.Dir(), LockFileName)); err != nil {
		t.Fatal(err)
	}
	release, err := s.LockDaemon()
	if err == nil {
		release()
		t.Fatal("LockDaemon through a link: got no error")
	}
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("LockDaemon: got %v, want a refusal saying the lock file is a link", err)
	}
	if got := readRaw(t, target); string(got) != "keep me\n" {
		t.Errorf("target: got %q, want it untouched", got)
	}
}
