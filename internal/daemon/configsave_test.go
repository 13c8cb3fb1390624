package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// stopDaemon ends d with SIGTERM and waits for it to exit.
func stopDaemon(t *testing.T, d *mmtest.Proc) {
	t.Helper()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.Wait(t, wait)
}

// waitStderr waits until d's stderr since offset from holds all of texts.
func waitStderr(t *testing.T, d *mmtest.Proc, from int, texts ...string) {
	t.Helper()
	mmtest.Eventually(t, wait, func() error {
		s := d.Stderr.String()[from:]
		for _, text := range texts {
			if !strings.Contains(s, text) {
				return fmt.Errorf("no %q on stderr yet; since:\n%s", text, tail(s, 2000))
			}
		}
		return nil
	})
}

// savedIncrement reads the increment_by of task's saved config.
func savedIncrement(t *testing.T, env *mmtest.Env, task string) any {
	t.Helper()
	cfg, err := env.Store().LoadConfig(task)
	if err != nil {
		t.Fatal(err)
	}
	return cfg["increment_by"]
}

// TestRejectedConfigNeverSaved: a config an exec task's co-process
// rejects is not saved (the task keeps the previous one, and so does its
// .conf file); and a saved config that the co-process rejects at start
// leaves the task unconfigured, with an alert, its messages waiting for a
// config it accepts.
func TestRejectedConfigNeverSaved(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skipf("PyCounter needs python3: %v", err)
	}
	dir, err := filepath.Abs("../../examples/exec")
	if err != nil {
		t.Fatal(err)
	}
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", dir)
	route := routeTo(map[string]string{"PyCounter": "test_out"})
	env.Configure(map[string]any{"PyCounter": map[string]any{"increment_by": 1}, "Router": route})
	myCt := func(ct int) int64 {
		t.Helper()
		env.Send("PyCounter", message.Message{"ct": ct})
		n, _ := message.Int(env.Recv("test_out", wait)["my_ct"])
		return n
	}
	if n := myCt(1); n != 2 {
		t.Fatalf("my_ct %d, want 2", n)
	}
	from := len(d.Stderr.String())
	env.Configure(map[string]any{"PyCounter": map[string]any{"increment_by": "y"}})
	waitStderr(t, d, from, "keeping the previous one")
	if n := myCt(2); n != 3 {
		t.Fatalf("after the rejected config: my_ct %d, want 3 (the previous config kept)", n)
	}
	if inc := savedIncrement(t, env, "PyCounter"); inc != int64(1) {
		t.Fatalf("saved increment_by %v, want 1: a rejected config was saved", inc)
	}

	// A saved config the task rejects at start (its code changed, say).
	stopDaemon(t, d)
	if err := env.Store().SaveConfig("PyCounter", map[string]any{"increment_by": "y"}); err != nil {
		t.Fatal(err)
	}
	d = env.StartDaemon("-p", dir)
	waitStderr(t, d, 0, "PyCounter: config rejected", "waits")
	env.Send("PyCounter", message.Message{"ct": 3})
	env.Configure(map[string]any{"PyCounter": map[string]any{"increment_by": 10}})
	if n, _ := message.Int(env.Recv("test_out", wait)["my_ct"]); n != 13 {
		t.Fatalf("my_ct %d, want 13: the message waited for a config the task accepts", n)
	}
	if inc := savedIncrement(t, env, "PyCounter"); inc != int64(10) {
		t.Fatalf("saved increment_by %v, want 10", inc)
	}
}

// TestConfigSavedDespiteFullDisk: a config applied while the state
// directory's file system is full is saved once there is room (retried,
// with an alert while it fails); the task acts on it only once it is
// saved; and a control message whose configs could not be saved before
// the daemon exited is not acknowledged: the next start applies it.
func TestConfigSavedDespiteFullDisk(t *testing.T) {
	t.Run("room again", func(t *testing.T) {
		env, mnt := smallStateDir(t)
		d := env.StartDaemon("-p", "MultiModuleTest")
		env.Configure(otherModuleConfig(1))
		if n := probe(t, env, 1); n != 2 {
			t.Fatalf("my_ct %d, want 2", n)
		}
		from := len(d.Stderr.String())
		fill(t, filepath.Join(mnt, "filler"))
		env.Configure(map[string]any{"OtherModule": map[string]any{"increment_by": 5}})
		waitStderr(t, d, from, "OtherModule.conf", "no space left on device")
		if inc := savedIncrement(t, env, "OtherModule"); inc != int64(1) {
			t.Fatalf("saved increment_by %v while the disk is full, want 1", inc)
		}
		if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
			t.Fatal(err)
		}
		if n := probe(t, env, 2); n != 7 {
			t.Fatalf("my_ct %d, want 7 (the new config)", n)
		}
		if inc := savedIncrement(t, env, "OtherModule"); inc != int64(5) {
			t.Fatalf("saved increment_by %v, want 5", inc)
		}
		stopDaemon(t, d)
		env.StartDaemon("-p", "MultiModuleTest")
		if n := probe(t, env, 3); n != 8 {
			t.Fatalf("after a restart: my_ct %d, want 8 (the new config kept)", n)
		}
	})
	t.Run("exit while full", func(t *testing.T) {
		env, mnt := smallStateDir(t)
		d := env.StartDaemon("-p", "MultiModuleTest")
		env.Configure(otherModuleConfig(1))
		if n := probe(t, env, 1); n != 2 {
			t.Fatalf("my_ct %d, want 2", n)
		}
		from := len(d.Stderr.String())
		fill(t, filepath.Join(mnt, "filler"))
		env.Configure(map[string]any{"OtherModule": map[string]any{"increment_by": 5}})
		waitStderr(t, d, from, "OtherModule.conf", "no space left on device")
		stopDaemon(t, d)
		if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
			t.Fatal(err)
		}
		env.StartDaemon("-p", "MultiModuleTest")
		// The bus hands the unacknowledged message out again once its
		// ack wait is over.
		ct := 1
		mmtest.Eventually(t, wait, func() error {
			ct++
			if n := probe(t, env, ct); n != int64(ct+5) {
				return fmt.Errorf("after a restart: my_ct %d, want %d (the control message applied again)", n, ct+5)
			}
			return nil
		})
		if inc := savedIncrement(t, env, "OtherModule"); inc != int64(5) {
			t.Fatalf("saved increment_by %v, want 5", inc)
		}
	})
}

// TestExternalRejectedConfigNotKept: an external task's process applies
// its config itself, from the file the daemon saves: a config it rejects
// is replaced in that file by the one it runs with, so a restart does not
// bring the rejected one back.
func TestExternalRejectedConfigNotKept(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	good := map[string]any{"increment_by": 2, "is_external": true}
	env.Configure(map[string]any{
		"OtherExternalModule": good,
		"Router":              routeTo(map[string]string{"OtherExternalModule": "out_ext"}),
	})
	externalPID(t, env, "OtherExternalModule", 0)
	myCt := func(ct int) int64 {
		t.Helper()
		env.Send("OtherExternalModule", message.Message{"ct": ct})
		n, _ := message.Int(env.Recv("out_ext", wait)["my_ct"])
		return n
	}
	if n := myCt(1); n != 3 {
		t.Fatalf("my_ct %d, want 3", n)
	}
	env.Configure(map[string]any{"OtherExternalModule": map[string]any{
		"increment_by": 5, "is_external": true,
		"transform": map[string]any{"a": " specials/(("}, // does not compile: rejected
	}})
	mmtest.Eventually(t, wait, func() error {
		log, _ := os.ReadFile(filepath.Join(env.StateDir, "OtherExternalModule.log"))
		if !strings.Contains(string(log), "keeping the previous one") && !strings.Contains(d.Stderr.String(), "keeping the previous one") {
			return fmt.Errorf("the rejection is not reported yet")
		}
		cfg, err := env.Store().LoadConfig("OtherExternalModule")
		if err != nil {
			return err
		}
		if inc, _ := message.Int(cfg["increment_by"]); inc != 2 || cfg["transform"] != nil {
			return fmt.Errorf("saved config %v, want the one the task runs with (increment_by 2)", cfg)
		}
		return nil
	})
	if n := myCt(2); n != 4 {
		t.Fatalf("my_ct %d, want 4 (the previous config kept)", n)
	}
}
