package daemon_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// smallStateDir mounts a 4 MiB tmpfs and returns an Env whose state
// directory lives on it, with the bus's transport directory (a symlink)
// elsewhere so that messages keep flowing while the state directory's
// file system is full or refuses writes. It skips the test where mounting
// is not allowed (not root, or a container without CAP_SYS_ADMIN). The
// mount is made before the Env, so it is unmounted after the Env's
// cleanup stopped the bus and the externals it finds there.
func smallStateDir(t *testing.T) (env *mmtest.Env, mnt string) {
	t.Helper()
	mnt = filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (%v: %s); store.TestFailedWriteKeepsOldFile covers a failed write", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	env = mmtest.NewEnv(t)
	env.StateDir = filepath.Join(mnt, "state")
	if err := os.Mkdir(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	transport := filepath.Join(t.TempDir(), "transit")
	if err := os.Mkdir(transport, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(transport, filepath.Join(env.StateDir, "transit")); err != nil {
		t.Fatal(err)
	}
	return env, mnt
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: got %v, want ENOSPC", path, err)
			}
			break
		}
	}
	// The last partial block too.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// savedCount waits until OtherModule's saved message_ct is want.
func savedCount(t *testing.T, env *mmtest.Env, want int64) {
	t.Helper()
	mmtest.Eventually(t, wait, func() error {
		if n := messageCount(t, env); n != want {
			return fmt.Errorf("saved message_ct %d, want %d", n, want)
		}
		return nil
	})
}

// stateFileCount reads OtherModule's message_ct from its state file
// directly (store.Open refuses a directory it cannot write to).
func stateFileCount(t *testing.T, env *mmtest.Env) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.StateDir, "OtherModule.state"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := message.Unmarshal(b)
	if err != nil {
		t.Fatalf("OtherModule.state is no longer valid JSON: %v", err)
	}
	n, _ := message.Int(m["message_ct"])
	return n
}

// TestStateDirFullOrNoPermission: while the state directory's file system is
// full (ENOSPC) or the directory refuses new files (EPERM: no permission,
// which holds for root too through the immutable attribute), saving state fails with an error that names the file and the
// cause, the old state file stays intact, and the daemon goes on handling
// messages; once there is room again, saving resumes.
func TestStateDirFullOrNoPermission(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		break_     func(t *testing.T, mnt string)
		repair     func(t *testing.T, mnt string)
	}{
		{"disk full", "no space left on device",
			func(t *testing.T, mnt string) { fill(t, filepath.Join(mnt, "filler")) },
			func(t *testing.T, mnt string) {
				if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
					t.Fatal(err)
				}
			}},
		{"no permission", "operation not permitted",
			func(t *testing.T, mnt string) { chattr(t, filepath.Join(mnt, "state"), "+i") },
			func(t *testing.T, mnt string) { chattr(t, filepath.Join(mnt, "state"), "-i") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, mnt := smallStateDir(t)
			d := env.StartDaemon("-p", "MultiModuleTest")
			env.Configure(otherModuleConfig(1))
			for i := range 5 {
				probe(t, env, i)
			}
			savedCount(t, env, 5)
			before := len(d.Stderr.String())
			tc.break_(t, mnt)
			for i := range 5 {
				if got := probe(t, env, i); got != int64(i+1) {
					t.Fatalf("my_ct %d, want %d: the daemon stopped handling messages", got, i+1)
				}
			}
			mmtest.Eventually(t, wait, func() error {
				s := d.Stderr.String()[before:]
				if !strings.Contains(s, "OtherModule.state") || !strings.Contains(s, tc.want) {
					return fmt.Errorf("no error naming OtherModule.state and %q yet; stderr since:\n%s", tc.want, tail(s, 2000))
				}
				return nil
			})
			if n := stateFileCount(t, env); n != 5 {
				t.Fatalf("state file while saves fail: message_ct %d, want 5 (the old state intact)", n)
			}
			if d.Exited() {
				t.Fatalf("the daemon exited; stderr:\n%s", tail(d.Stderr.String(), 3000))
			}
			tc.repair(t, mnt)
			savedCount(t, env, 10)
		})
	}
}

// chattr sets or clears the immutable attribute of dir: nobody, root
// included, may then create, remove or rename files in it — a state
// directory without permission that also holds for root.
func chattr(t *testing.T, dir, op string) {
	t.Helper()
	if out, err := exec.Command("chattr", op, dir).CombinedOutput(); err != nil {
		t.Fatalf("chattr %s %s: %v: %s", op, dir, err, out)
	}
	if op == "+i" {
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
	}
}
