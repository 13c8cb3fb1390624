package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/trust/trusttest"
)

// TestLooseStateDirRefused: a daemon, and a command that reads the bus
// token, refuse a state directory others can write, saying so and how to
// fix it; nothing is started.
func TestLooseStateDirRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(env.StateDir, 0o777); err != nil {
		t.Fatal(err)
	}
	d := env.Start("-p", "MultiModuleTest")
	code := d.Wait(t, wait)
	want := fmt.Sprintf("state dir %[1]s is writable by others (mode 0777): run chmod 700 %[1]s", env.StateDir)
	if stderr := d.Stderr.String(); code == 0 || !strings.Contains(stderr, want) {
		t.Errorf("daemon: got exit %d, stderr %q; want non-zero and %q", code, stderr, want)
	}
	send := env.Start("send", "q", `{"password":"hunter2"}`)
	code = send.Wait(t, wait)
	stderr := send.Stderr.String()
	want = fmt.Sprintf("which is writable by others (mode 0777) without the sticky bit: they could replace it: run chmod go-w %s", env.StateDir)
	if code == 0 || !strings.Contains(stderr, want) {
		t.Errorf("send: got exit %d, stderr %q; want non-zero and %q", code, stderr, want)
	}
	if _, err := os.Stat(filepath.Join(env.StateDir, "transit", "bus.json")); err == nil {
		t.Error("a bus was started in the refused state dir")
	}
}

// sleeper starts `sleep 1000` (as cmd says), kills it at the end of the
// test, and returns its identity.
func sleeper(t *testing.T, cmd *exec.Cmd) procid.Identity {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var id procid.Identity
	mmtest.Eventually(t, wait, func() error {
		var err error
		if id, err = procid.Of(cmd.Process.Pid); err != nil || len(id.Cmdline) == 0 {
			return fmt.Errorf("no command line yet (%v)", err)
		}
		return nil
	})
	return id
}

// TestPlantedStatusNotAdopted: the status files of two failsafed external
// tasks name processes that are not their externals: another user's
// `sleep`, and a `sleep` of ours that does not hold the task's lock. The
// daemon adopts neither (it says why), so its failsafe never stops them:
// both are still running once the daemon has started and handled a
// message.
func TestPlantedStatusNotAdopted(t *testing.T) {
	trusttest.Nobody(t)
	theirs := sleeper(t, trusttest.Command(t, "sleep", "1000"))
	ours := sleeper(t, exec.Command("sleep", "1000"))
	env := mmtest.NewEnv(t)
	st := env.Store()
	for task, id := range map[string]procid.Identity{"Theirs": theirs, "Ours": ours} {
		if err := st.SaveConfig(task, map[string]any{"increment_by": 1, "is_external": true}); err != nil {
			t.Fatal(err)
		}
		if err := st.SaveStatus(task, store.Status{PID: id.PID, StartTime: id.StartTime, Cmdline: id.Cmdline, External: true, Stateful: true}); err != nil {
			t.Fatal(err)
		}
		if err := st.WriteFailsafe(task, map[string]any{"summary": "planted"}); err != nil {
			t.Fatal(err)
		}
	}
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 0)
	for what, id := range map[string]procid.Identity{"another user's sleep": theirs, "our sleep": ours} {
		if !id.Alive() {
			t.Errorf("%s (pid %d): killed, want it left alone", what, id.PID)
		}
	}
	stderrHas(t, env, d,
		fmt.Sprintf("adopt pid %d (start %d): it runs as uid", theirs.PID, theirs.StartTime),
		fmt.Sprintf("adopt pid %d (start %d): its command line", ours.PID, ours.StartTime))
}

// TestRejectedControlMessageNamesFieldsOnly: a refused control message is
// reported with the names of its fields, never their values (configs
// carry secrets).
func TestRejectedControlMessageNamesFieldsOnly(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Send("MultiModule_control", message.Message{".multimodule": map[string]any{"config": map[string]any{
		"OtherModule": map[string]any{"is_external": map[string]any{}, "password": "hunter2-secret"},
	}}})
	stderrHas(t, env, d, "control message rejected", "is_external must be true or false")
	if strings.Contains(d.Stderr.String(), "hunter2") {
		t.Errorf("stderr holds the secret:\n%s", d.Stderr.String())
	}
	stderrHas(t, env, d, ".multimodule.config.OtherModule.password")
}

// TestTaskDirDoesNotShadowNamespace: an executable
// ./MultiModuleTest/Example1 in the working directory (which whoever can
// write there may have put) does not replace the compiled-in
// MultiModuleTest Example1 named by `-p MultiModuleTest`: the compiled-in
// task runs, the file is never run, and the daemon says the directory is
// not used. `-p ./MultiModuleTest` is how to ask for the directory.
func TestTaskDirDoesNotShadowNamespace(t *testing.T) {
	cwd := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	if err := os.Mkdir(filepath.Join(cwd, "MultiModuleTest"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\ntouch %q\nexit 1\n", marker)
	if err := os.WriteFile(filepath.Join(cwd, "MultiModuleTest", "Example1"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(cwd)

	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{
		"Example1": map[string]any{"outstr": "compiled-in"},
		"Router":   routeTo(map[string]string{"Example1": "test_out"}),
	})
	if out := env.Recv("test_out", wait); out["outstr"] != "compiled-in" {
		t.Errorf("Example1 emitted %v, want the compiled-in task's output", out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("./MultiModuleTest/Example1 was run, want it ignored")
	}
	mmtest.Eventually(t, wait, func() error {
		if s := d.Stdout.String() + d.Stderr.String(); !strings.Contains(s, "the directory ./MultiModuleTest is not used (write -p ./MultiModuleTest to use it)") {
			return fmt.Errorf("no warning yet; output:\n%s", s)
		}
		return nil
	})

	env2 := mmtest.NewEnv(t)
	env2.StartDaemon("-p", "./MultiModuleTest")
	env2.Configure(map[string]any{"Example1": map[string]any{}})
	mmtest.Eventually(t, wait, func() error {
		_, err := os.Stat(marker)
		return err
	})
}
