// Package trusttest plays another local user in tests: it runs commands
// as the user "nobody" and gives files to it. It needs root (to change
// credentials and owners); without it, or without a "nobody" user, the
// calling test is skipped with the reason.
package trusttest

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Nobody returns the uid and gid of the user "nobody", skipping t when
// this process cannot act as another user.
func Nobody(t testing.TB) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("acting as another local user needs root (to run a command as nobody and chown files to it)")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody to act as another local user: %v", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		t.Skipf("user nobody has a non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	return uid, gid
}

// Command is exec.Command running as nobody, with no supplementary
// groups.
func Command(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	uid, gid := Nobody(t)
	c := exec.Command(name, args...)
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	return c
}

// Sh runs the shell script as nobody, with args as $0, $1, …, and fails
// t when it fails.
func Sh(t testing.TB, script string, args ...string) {
	t.Helper()
	out, err := Command(t, "sh", append([]string{"-c", script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: sh -c %q: %v\n%s", script, err, out)
	}
}

// Chown gives path (not following a link) to nobody.
func Chown(t testing.TB, path string) {
	t.Helper()
	uid, gid := Nobody(t)
	if err := os.Lchown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// TempDir is t.TempDir made enterable by others (with the directory
// testing puts it in), so that another user can reach a directory inside
// it, as in a real home or /srv. It stays writable by its owner only.
func TempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
