package daemon_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// TestStateDirPrivate: after a daemon ran with an external task, every
// directory under the state directory is 0700 and no file is readable or
// writable by group or others (configs, state, status, logs, the bus
// token and its JetStream store).
func TestStateDirPrivate(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{
		"Router":      routeTo(map[string]string{"OtherModule": "test_out"}),
		"OtherModule": map[string]any{"increment_by": 1, "is_external": true},
	})
	externalPID(t, env, "OtherModule", 0)
	env.Send("OtherModule", message.Message{"ct": 1})
	env.Recv("test_out", wait)
	env.Eventually(wait, func() error {
		if messageCount(t, env) != 1 {
			return fmt.Errorf("state not saved yet")
		}
		return nil
	})
	err := filepath.WalkDir(env.StateDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return nil // removed while walking (a temp file)
		}
		if de.Type()&fs.ModeSymlink != 0 || de.Type()&fs.ModeSocket != 0 {
			return nil
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: got mode %v, want no group/other access", path, perm)
		}
		if de.IsDir() && fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: got directory mode %v, want 0700", path, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBusRefusesClientsWithoutToken: the daemon's bus, reached at the
// address bus.json gives, refuses a NATS client without the token or
// with a wrong one.
func TestBusRefusesClientsWithoutToken(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon()
	bi, err := transit.ReadBusInfo(filepath.Join(env.StateDir, "transit"))
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]nats.Option{nil, {nats.Token("guess")}, {nats.UserInfo("admin", "admin")}} {
		nc, err := nats.Connect(bi.URL, append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatalf("connect to %s with %d options: got a connection, want refused", bi.URL, len(opts))
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("got %v, want an authorization error", err)
		}
	}
}

// TestExpressionsCannotReadFiles: an operator's state transform (and a
// task's config transform) with an expression that tries to read a file,
// the environment or run a program is refused with an error naming the
// key; the state stays as it was. transform.TestSandboxNoSystemAccess
// checks every such function at the library level.
func TestExpressionsCannotReadFiles(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 1)
	for _, expr := range []string{`readFile("/etc/passwd")`, `os.ReadFile("/etc/hostname")`, `env("HOME")`, `exec("id")`} {
		t.Run(expr, func(t *testing.T) {
			before := reported(d)
			env.Send("OtherModule", message.Message{".multimodule": map[string]any{"transform": map[string]any{"stolen": " specials/" + expr}}})
			mmtest.Eventually(t, wait, func() error {
				if reported(d) == before {
					return fmt.Errorf("no error naming the key \"stolen\" yet")
				}
				return nil
			})
			probe(t, env, 1)
			st, err := env.Store().LoadState("OtherModule")
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := st["stolen"]; ok {
				t.Fatalf("state got stolen=%.80v, want no such key", v)
			}
		})
	}
	// The same through a task's config transform (applied per message).
	before := reported(d)
	env.Configure(map[string]any{"OtherModule": map[string]any{"increment_by": 1, "transform": map[string]any{"stolen": ` specials/readFile("/etc/passwd")`}}})
	mmtest.Eventually(t, wait, func() error {
		if reported(d) == before {
			return fmt.Errorf("no error naming the key \"stolen\" for the config transform yet")
		}
		return nil
	})
	env.Send("OtherModule", message.Message{"ct": 2})
	if out := env.Recv("test_out", wait); out["stolen"] != nil {
		t.Fatalf("output carries stolen=%.80v, want nothing", out["stolen"])
	}
}

// reported counts the errors naming the key "stolen" on d's stderr.
func reported(d *mmtest.Proc) int { return strings.Count(d.Stderr.String(), `key \"stolen\"`) }

// TestExecTaskEnvironment: an exec task's co-process, started by the
// daemon, does not inherit the daemon's environment (a secret set there
// does not reach it). exectask.TestMinimalEnvironment checks the exact
// list at the adapter level.
func TestExecTaskEnvironment(t *testing.T) {
	dir, err := filepath.Abs("../../examples/exec")
	if err != nil {
		t.Fatal(err)
	}
	mmtest.NeedInterpreter(t, filepath.Join(dir, "PyCounter"))
	t.Setenv("MULTIMODULE_TEST_SECRET", "hunter2") // inherited by the daemon the harness starts
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", dir)
	env.Configure(map[string]any{
		"PyCounter": map[string]any{"increment_by": 1},
		"Router":    routeTo(map[string]string{"PyCounter": "test_out"}),
	})
	env.Send("PyCounter", message.Message{"ct": 1})
	out := env.Recv("test_out", wait)
	pid, ok := message.Int(out["module_pid"])
	if !ok || pid <= 0 {
		t.Fatalf("output without module_pid: %v", out)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		k, _, _ := strings.Cut(kv, "=")
		if k == "MULTIMODULE_TEST_SECRET" || k == mmtest.EnvMain || strings.HasPrefix(k, "NATS") {
			t.Errorf("exec co-process (pid %d) environment has %s, want it kept out", pid, kv)
		}
	}
}
