package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/mmtest"
)

// TestRunJoinsItsGoroutines runs the daemon in this process — a config
// file being rewritten, a directory of exec tasks, a control message, an
// external task, a placed task — and ends it while the file changes: when Run returns,
// every goroutine it started has ended (none applies a config after the
// host shut down, none waits forever for an external to exit). Ended by
// its context (as by SIGTERM), the daemon leaves the external running
// (the next daemon adopts it); by cleanly_exit with exit_externals, it
// stops it.
func TestRunJoinsItsGoroutines(t *testing.T) {
	for _, how := range []string{"context", "cleanly_exit"} {
		t.Run(how, func(t *testing.T) {
			env := mmtest.NewEnv(t)
			before := goleak.IgnoreCurrent() // the harness's, the other tests'
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			execDir, err := filepath.Abs("../../examples/exec")
			if err != nil {
				t.Fatal(err)
			}
			cfgFile := filepath.Join(t.TempDir(), "config.json")
			writeConfig := func(inc int) {
				cfg := fmt.Sprintf(`{"OtherModule": {"increment_by": %d}, "OtherExternalModule": {"increment_by": %d, "is_external": true}, "Counter": {"placement": {"any": true}}}`, inc, inc)
				if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			writeConfig(1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			var out mmtest.Buffer
			go func() {
				done <- daemon.Run(ctx, daemon.Options{
					StateDir:        env.StateDir,
					Sources:         []string{"MultiModuleTest", execDir},
					ConfigFile:      cfgFile,
					ExternalArgv:    []string{exe, "-s", env.StateDir, "-p", "MultiModuleTest", "-p", execDir},
					Stdout:          &out,
					Stderr:          &out,
					ShutdownTimeout: time.Minute,
				})
			}()
			env.Eventually(time.Minute, func() error {
				select {
				case err := <-done:
					t.Fatalf("Run returned early: %v; output:\n%s", err, out.String())
				default:
				}
				st, err := env.Store().LoadStatus("OtherExternalModule")
				if err != nil || st == nil || !st.External || !st.Identity().Alive() {
					return fmt.Errorf("OtherExternalModule not running external yet (%+v, %v)", st, err)
				}
				return nil
			})
			// The placed Counter runs here, the only live box.
			env.Eventually(time.Minute, func() error {
				stdout, stderr, code := env.Run("status", "--all-hosts", "--json", "--wait=20s")
				if code != 0 || !strings.Contains(stdout, `"where": "placed"`) {
					return fmt.Errorf("the placed Counter does not run yet: exit %d: %s%s", code, stdout, stderr)
				}
				return nil
			})
			if _, stderr, code := env.Run("send", "MultiModule_control", `{".multimodule":{"config":{"ShellEcho":{}}}}`); code != 0 {
				t.Fatalf("send: exit %d: %s", code, stderr)
			}
			// The config file changes while the daemon exits.
			for i := 2; i < 6; i++ {
				writeConfig(i)
			}
			if how == "context" {
				cancel()
			} else if _, stderr, code := env.Run("send", "MultiModule_control", `{".multimodule":{"control":[{"type":"cleanly_exit","exit_externals":true}]}}`); code != 0 {
				t.Fatalf("send: exit %d: %s", code, stderr)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Logf("Run: %v", err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("Run did not return; output:\n%s", out.String())
			}
			goleak.VerifyNone(t, before,
				// Each waits for a child process that outlives the daemon
				// by design: the embedded bus (shared by every process of
				// the state directory), and the external process (left
				// running by a daemon that exits without exit_externals,
				// and adopted by the next one). They end when their
				// process does (the test's cleanup kills both).
				goleak.IgnoreAnyFunction("github.com/multimodule/multimodule/transit.(*busStarter).start.func1"),
				goleak.IgnoreAnyFunction("github.com/multimodule/multimodule/supervise.(*Process).reap"),
			)
		})
	}
}
