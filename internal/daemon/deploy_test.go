package daemon_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// The procedures of docs/deploy.md, run with real processes: upgrading
// the binary while externals run, and backing up the state directory.

// exeOf is the program process pid runs.
func exeOf(t *testing.T, pid int) string {
	t.Helper()
	p, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// copyExe copies this test binary (which runs multimodule under
// mmtest.Main) to dir/name: "the new release".
func copyExe(t *testing.T, dir, name string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(dir, name)
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpgradeAdoptsExternals: a daemon stopped with SIGTERM (systemctl
// restart with KillMode=process) leaves its externals running; the new
// binary's daemon adopts them (same process, still the old program), and
// an external sent SIGTERM is started again from the new binary.
func TestUpgradeAdoptsExternals(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		t.Skip("jq is not installed")
	}
	env := mmtest.NewEnv(t)
	oldExe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	newExe := copyExe(t, t.TempDir(), "multimodule-new")
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{
		"OtherExternalModule": map[string]any{"increment_by": 2, "is_external": true},
		"Router":              routeTo(map[string]string{"OtherExternalModule": "out_ext"}),
	})
	ext := externalPID(t, env, "OtherExternalModule", 0)

	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, tail(d.Stderr.String(), 3000))
	}
	if err := syscall.Kill(ext, 0); err != nil {
		t.Fatalf("the external %d did not outlive the daemon: %v", ext, err)
	}

	env.Exe = newExe
	d2 := env.StartDaemon("-p", "MultiModuleTest")
	if got := exeOf(t, d2.PID()); got != newExe {
		t.Fatalf("the new daemon runs %s, want %s", got, newExe)
	}
	d2.WaitOutput(t, "adopted the running external process of OtherExternalModule \\(pid "+strconv.Itoa(ext)+"\\)", wait)
	if pid := externalPID(t, env, "OtherExternalModule", 0); pid != ext {
		t.Fatalf("external pid %d after the upgrade, want the adopted %d", pid, ext)
	}
	if got := exeOf(t, ext); got != oldExe {
		t.Fatalf("the adopted external runs %s, want the old %s", got, oldExe)
	}
	for i := range 5 {
		env.Send("OtherExternalModule", message.Message{"ct": i})
	}
	if pids, _ := stream(t, env, "out_ext", 5, 2); pids[4] != int64(ext) {
		t.Fatalf("handled by pid %d, want the adopted external %d", pids[4], ext)
	}

	// Move the external to the new binary: SIGTERM, and the daemon starts
	// it again from its own program.
	docRun(t, ".", env.StateDir, "Task.status)", "Task.status", "OtherExternalModule.status")
	ext2 := externalPID(t, env, "OtherExternalModule", ext)
	if got := exeOf(t, ext2); got != newExe {
		t.Fatalf("the restarted external runs %s, want the new %s", got, newExe)
	}
	for i := range 5 {
		env.Send("OtherExternalModule", message.Message{"ct": 5 + i})
	}
	for i := range 5 {
		out := env.Recv("out_ext", wait)
		if ct, _ := message.Int(out["ct"]); ct != int64(5+i) {
			t.Fatalf("after the external's restart: ct %d, want %d", ct, 5+i)
		}
	}
}

const deployDocs = "../../docs/deploy.md"

// docRun runs the command of docs/deploy.md that contains substr with
// sh in dir, the documented state directory replaced by stateDir.
func docRun(t *testing.T, dir, stateDir, substr string, replace ...string) string {
	t.Helper()
	c := strings.ReplaceAll(mmtest.DocCommand(t, deployDocs, substr), "/var/lib/multimodule", stateDir)
	c = strings.NewReplacer(replace...).Replace(c)
	cmd := exec.Command("sh", "-c", c)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", c, err, out)
	}
	return string(out)
}

// restore unpacks archive (in dir) into a new Env's state directory as
// docs/deploy.md says.
func restore(t *testing.T, dir, archive string) *mmtest.Env {
	t.Helper()
	env := mmtest.NewEnv(t)
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	docRun(t, dir, env.StateDir, "-xzf multimodule-full.tar.gz", "multimodule-full.tar.gz", archive)
	return env
}

// TestBackupStateDir: the live backup (configs and task state, without
// transit/) restores the configs; the offline backup (daemon stopped with
// SIGINT so the externals stop, then the bus) also restores the messages
// waiting in the queues, which live in transit/.
func TestBackupStateDir(t *testing.T) {
	for _, tool := range []string{"tar", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	// No client of the bus in this process: it would start the bus again
	// once stopped. Commands come and go.
	apply := func(args ...string) {
		t.Helper()
		if out, errOut, code := env.Run(args...); code != 0 {
			t.Fatalf("multimodule %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	apply("send", "MultiModule_control", `{".multimodule":{"config":{"OtherExternalModule":{"increment_by":2,"is_external":true}}}}`)
	ext := externalPID(t, env, "OtherExternalModule", 0)
	for i := range 5 {
		apply("send", "Backlog", fmt.Sprintf(`{"ct":%d}`, i))
	}
	apply("send", "OtherExternalModule", `{"ct":0}`)
	mmtest.Eventually(t, wait, func() error {
		_, err := os.Stat(filepath.Join(env.StateDir, "OtherExternalModule.state"))
		return err
	})

	// The companion commands, as the service's user runs them.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if out := docRun(t, ".", env.StateDir, "multimodule -s /var/lib/multimodule status", "multimodule -s", self+" -s"); !strings.Contains(out, "OtherExternalModule") {
		t.Fatalf("status does not show the external:\n%s", out)
	}
	if out := docRun(t, ".", env.StateDir, "multimodule -s /var/lib/multimodule queues", "multimodule -s", self+" -s"); !strings.Contains(out, "Backlog") {
		t.Fatalf("queues does not show Backlog:\n%s", out)
	}

	dir := t.TempDir()
	docRun(t, dir, env.StateDir, "--exclude=./transit")

	// Offline: SIGINT stops the daemon and its externals in order, then
	// the bus is stopped with SIGTERM; then everything is copied.
	if err := d.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d after SIGINT; stderr:\n%s", code, tail(d.Stderr.String(), 3000))
	}
	mmtest.Eventually(t, wait, func() error {
		if syscall.Kill(ext, 0) == nil {
			return fmt.Errorf("the external %d still runs after the daemon's SIGINT", ext)
		}
		return nil
	})
	bi, err := transit.ReadBusInfo(filepath.Join(env.StateDir, "transit"))
	if err != nil {
		t.Fatal(err)
	}
	docRun(t, dir, env.StateDir, "transit/bus.json)")
	mmtest.Eventually(t, wait, func() error {
		if bi.Alive() {
			return fmt.Errorf("the bus %d still runs", bi.PID)
		}
		return nil
	})
	docRun(t, dir, env.StateDir, "-czf multimodule-full.tar.gz")

	// The live backup: configs, no queued messages.
	envLive := restore(t, dir, "multimodule-state.tar.gz")
	for _, name := range []string{"transit", "OtherExternalModule.log", "OtherExternalModule.status"} {
		if _, err := os.Stat(filepath.Join(envLive.StateDir, name)); !os.IsNotExist(err) {
			t.Fatalf("the live backup holds %s (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(envLive.StateDir, "OtherExternalModule.state")); err != nil {
		t.Fatalf("the live backup lacks the task's state: %v", err)
	}
	cfg, err := envLive.Store().LoadConfig("OtherExternalModule")
	if err != nil || cfg == nil || cfg["is_external"] != true {
		t.Fatalf("config from the live backup: %v (%v)", cfg, err)
	}

	// The offline backup: configs and the queued messages.
	envOff := restore(t, dir, "multimodule-full.tar.gz")
	envOff.StartDaemon("-p", "MultiModuleTest")
	externalPID(t, envOff, "OtherExternalModule", 0)
	for i := range 5 {
		m := envOff.Recv("Backlog", wait)
		if ct, _ := message.Int(m["ct"]); ct != int64(i) {
			t.Fatalf("restored Backlog message %d: ct %d", i, ct)
		}
	}
}
