package mmtest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/multimodule/multimodule/examples/testtasks"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/procid"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// gone fails t unless every process in ids has ended and been reaped: no
// process of that pid and start time is left, not even a zombie.
func gone(t *testing.T, ids []procid.Identity) {
	t.Helper()
	for _, id := range ids {
		now, err := procid.Of(id.PID)
		if err == nil && now.StartTime == id.StartTime {
			state := "running"
			if len(now.Cmdline) == 0 {
				state = "a zombie"
			}
			t.Errorf("pid %d (%v) is still there after the test's clean-up: %s", id.PID, id.Cmdline, state)
		}
	}
}

func readPID(t *testing.T, path string) procid.Identity {
	t.Helper()
	var id procid.Identity
	mmtest.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return fmt.Errorf("no pid in %s yet (%v)", path, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return err
		}
		id, err = procid.Of(pid)
		return err
	})
	return id
}

// TestCleanupKillsStrays: a process the harness did not start and no
// status file records, but whose command line names the state directory
// — an external started just as a test ends, say — is killed at the end
// of the test with its descendants, and both are reaped although their
// parent was gone (they are orphans adopted by the test process).
func TestCleanupKillsStrays(t *testing.T) {
	var ids []procid.Identity
	t.Run("test", func(t *testing.T) {
		env := mmtest.NewEnv(t)
		if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		// The launcher exits at once: the stray (in its own session, like
		// an external) is orphaned. Its child does not name the directory.
		stray := `sleep 300 & echo $! > "$1/child.pid"; echo $$ > "$1/stray.pid"; wait`
		launch := exec.Command("sh", "-c", `setsid sh -c "$0" stray "$1" </dev/null >/dev/null 2>&1 &`, stray, env.StateDir)
		if out, err := launch.CombinedOutput(); err != nil {
			t.Fatalf("launch: %v: %s", err, out)
		}
		ids = append(ids, readPID(t, filepath.Join(env.StateDir, "stray.pid")), readPID(t, filepath.Join(env.StateDir, "child.pid")))
		if n := len(env.Processes()); n != 2 {
			t.Errorf("Processes: got %d, want 2 (the stray and its child): %v", n, env.Processes())
		}
	})
	gone(t, ids)
}

// TestCleanupAfterDaemonKill: a daemon killed by the test leaves its
// external process behind, adopted by the test process; when that dies
// during the test it is reaped, and the clean-up kills and reaps the rest
// (the bus).
func TestCleanupAfterDaemonKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon and an external process")
	}
	var ids []procid.Identity
	t.Run("test", func(t *testing.T) {
		env := mmtest.NewEnv(t)
		d := env.StartDaemon("-p", "MultiModuleTest")
		env.Configure(map[string]any{"OtherExternalModule": map[string]any{"is_external": true}})
		var ext procid.Identity
		env.Eventually(30*time.Second, func() error {
			st, err := env.Store().LoadStatus("OtherExternalModule")
			if err != nil || st == nil || !st.External || !st.Identity().Alive() {
				return fmt.Errorf("external process not running yet (%v)", err)
			}
			ext = st.Identity()
			return nil
		})
		d.Kill()
		env.Eventually(10*time.Second, func() error {
			now, err := procid.Of(ext.PID)
			if err != nil {
				return err
			}
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ext.PID))
			if err != nil {
				return err
			}
			// ppid is field 4; the command name (field 2) ends with ')'.
			f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
			if f[1] != strconv.Itoa(os.Getpid()) {
				return fmt.Errorf("external %v has parent %s, want this test process (a child subreaper)", now, f[1])
			}
			return nil
		})
		// An adopted process that dies during the test is reaped then,
		// not only at the end.
		if err := syscall.Kill(ext.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		env.Eventually(10*time.Second, func() error {
			if now, err := procid.Of(ext.PID); err == nil && now.StartTime == ext.StartTime {
				b, _ := os.ReadFile(filepath.Join(env.StateDir, "OtherExternalModule.log"))
				return fmt.Errorf("the killed external %v is not reaped yet; its log:\n%s", ext, b)
			}
			return nil
		})
		for pid, cmd := range env.Processes() {
			if id, err := procid.Of(pid); err == nil {
				ids = append(ids, id)
			}
			t.Logf("running at the end of the test: %d %s", pid, cmd)
		}
	})
	gone(t, ids)
}
