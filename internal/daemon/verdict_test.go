package daemon_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// writeConfig writes cfg as a JSON config file and returns its path.
func writeConfig(t *testing.T, cfg map[string]any) string {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitRecord reads records from queue q until one's text contains want.
func waitRecord(t *testing.T, env *mmtest.Env, q, want string) {
	t.Helper()
	var seen []string
	env.Eventually(wait, func() error {
		rec := env.Recv(q, wait)
		text := fmt.Sprint(rec["text"])
		seen = append(seen, text)
		if !strings.Contains(text, want) {
			return fmt.Errorf("no record containing %q on %s yet; saw %q", want, q, seen)
		}
		return nil
	})
}

// TestUnknownTaskIsAnExplainedLoadFailure: a task no -p source has (a
// forgotten -p, a typo) is a load failure: config apply says so and
// exits 1, an error record names the sources searched (and the -p that
// has it), status gives the reason, and the failure is counted.
func TestUnknownTaskIsAnExplainedLoadFailure(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-o", "alert:alerts_q,error:errors_q")
	env.Configure(map[string]any{"MultiModule": fastMonitor(nil)})
	file := writeConfig(t, map[string]any{
		"Example1":   map[string]any{"emit_rate": 1},
		"NoSuchTask": map[string]any{"foo": 1},
	})
	out, stderr, code := env.Run("config", "apply", file)
	if code != 1 {
		t.Fatalf("config apply of unknown tasks: exit %d, want 1\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	for _, want := range []string{
		"Example1: config saved, but the task is not loaded: unknown task: no task Example1 in builtin; did you forget -p MultiModuleTest?",
		"NoSuchTask: config saved, but the task is not loaded: unknown task: no task NoSuchTask in builtin\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config apply printed:\n%s\nwant a line %q", out, want)
		}
	}
	waitRecord(t, env, "errors_q", "no task Example1 in builtin; did you forget -p MultiModuleTest?")
	st := statusOf(t, env, "Example1")
	if st["running"] != false || st["reason"] != "unknown task" || !strings.Contains(fmt.Sprint(st["reason_detail"]), "did you forget -p MultiModuleTest?") {
		t.Errorf("status of Example1: got %v, want not running, reason unknown task with the -p hint", st)
	}
	text, _, _ := env.Run("status")
	if !strings.Contains(text, "REASON") || !strings.Contains(text, "unknown task (retry at ") {
		t.Errorf("status:\n%s\nwant a REASON column saying unknown task", text)
	}
	waitAlert(t, env, "alerts_q", func(d map[string]any) bool {
		return d["task_name"] == "NoSuchTask" && d["bucket_metric"] == "local.admin.task_compile_failure.internal" && d["level"] != "ok"
	})
}

// TestExternalDoesNotReportDaemonTasks: an external process hosts its own
// task; the daemon's own tasks (MultiModule, OutOfBand) and the others
// configured are none of its business. It must not report them as
// unknown tasks (it did, once per load back-off, forever).
func TestExternalDoesNotReportDaemonTasks(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "error:errors_q")
	env.Configure(map[string]any{
		"MultiModule":         fastMonitor(nil),
		"NoSuchTask":          map[string]any{"foo": 1}, // the daemon reports this one
		"OtherExternalModule": map[string]any{"is_external": true},
		"Router": map[string]any{"routes": []any{map[string]any{
			"match": map[string]any{"source": "OtherExternalModule"}, "forwards": []any{map[string]any{"qname": "out"}},
		}}},
	})
	pid := externalPID(t, env, "OtherExternalModule", 0)
	env.Send("OtherExternalModule", message.Message{"ct": 1})
	if got := env.Recv("out", wait); fmt.Sprint(got["module_pid"]) != fmt.Sprint(pid) {
		t.Fatalf("got %v, want it handled by the external (pid %d)", got, pid)
	}
	// The daemon retries NoSuchTask after 1 s, then 2 s more: by its
	// third report the external has been up for seconds, and would have
	// reported its own load failures twice.
	var seen []string
	env.Eventually(wait, func() error {
		rec := env.Recv("errors_q", wait)
		text := fmt.Sprint(rec["text"])
		seen = append(seen, text)
		if fmt.Sprint(rec["pid"]) == fmt.Sprint(pid) && strings.Contains(text, "failed to load") {
			t.Fatalf("the external process reported a load failure: %v", rec)
		}
		if !strings.Contains(text, "task NoSuchTask failed to load (attempt 3") {
			return fmt.Errorf("no third report of NoSuchTask yet; saw %q", seen)
		}
		return nil
	})
}

// TestConfigApplyVerdict: config apply waits for the daemon's verdict:
// accepted (exit 0), or no daemon (exit 2 after --wait).
func TestConfigApplyVerdict(t *testing.T) {
	env := mmtest.NewEnv(t)
	file := writeConfig(t, map[string]any{"Example1": map[string]any{"emit_rate": 1}})
	out, stderr, code := env.Run("config", "apply", "--wait", "2s", file)
	if code != 2 || !strings.Contains(stderr, "no daemon is consuming the control queue MultiModule_control") {
		t.Fatalf("config apply without a daemon: exit %d, want 2 saying no daemon\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	env.StartDaemon("-p", "MultiModuleTest")
	// The message sent without a daemon waits in the control queue: the
	// daemon applies it (the verdict's sender is gone; no reply).
	out, stderr, code = env.Run("config", "apply", file)
	if code != 0 || !strings.Contains(out, "Example1: accepted") {
		t.Fatalf("config apply: exit %d, want 0 and Example1 accepted\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if st := statusOf(t, env, "Example1"); st["reason"] != nil {
		t.Errorf("status of a running task: got reason %v, want none", st["reason"])
	}
	// No reply queue is left on the bus.
	env.Eventually(wait, func() error {
		qs, _, _ := env.Run("queues")
		if strings.Contains(qs, "MultiModule_reply.") {
			return fmt.Errorf("reply queues left on the bus:\n%s", qs)
		}
		return nil
	})
}

// TestConfigRejectedByTaskRefused: a config its task rejects (here
// OtherModule's transform does not compile) is refused in config apply's
// verdict (exit 1), and the task keeps the config it runs with, saved.
func TestConfigRejectedByTaskRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	good := writeConfig(t, map[string]any{"OtherModule": map[string]any{"increment_by": 2}})
	if out, stderr, code := env.Run("config", "apply", good); code != 0 {
		t.Fatalf("config apply of a good config: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	bad := writeConfig(t, map[string]any{"OtherModule": map[string]any{"increment_by": 3, "transform": map[string]any{"x": " specials/((("}}})
	out, stderr, code := env.Run("config", "apply", bad)
	if code != 1 || !strings.Contains(out, "OtherModule: refused") {
		t.Fatalf("config apply of a config the task rejects: exit %d, want 1 and OtherModule refused\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	saved, err := env.Store().LoadConfig("OtherModule")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(saved["increment_by"]) != "2" || saved["transform"] != nil {
		t.Fatalf("saved config after the rejection: %v, want the accepted {increment_by: 2}", saved)
	}
}

// TestUnfailsafeSaysWhatItDid: unfailsafe of a task that is not
// failsafed does nothing and says so (exit 0, no error record); of a
// failsafed one, it clears the failsafe.
func TestUnfailsafeSaysWhatItDid(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	if out, stderr, code := env.Run("config", "apply", writeConfig(t, map[string]any{"OtherModule": map[string]any{}})); code != 0 {
		t.Fatalf("config apply: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	out, stderr, code := env.Run("unfailsafe", "OtherModule")
	if code != 0 || !strings.Contains(out, "task OtherModule is not failsafed: nothing to clear") || strings.Contains(out, "unfailsafed") {
		t.Errorf("unfailsafe of a task that is not failsafed: exit %d, want 0 and only the note\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if out, stderr, code := env.Run("failsafe", "OtherModule"); code != 0 {
		t.Fatalf("failsafe: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	out, stderr, code = env.Run("unfailsafe", "OtherModule")
	if code != 0 || !strings.Contains(out, "OtherModule: unfailsafed") || strings.Contains(out, "nothing to clear") {
		t.Errorf("unfailsafe of a failsafed task: exit %d, want 0 and unfailsafed\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if fs, err := env.Store().ReadFailsafe("OtherModule"); err != nil || fs != nil {
		t.Errorf("after unfailsafe: failsafe %v, %v; want none", fs, err)
	}
	if strings.Contains(d.Stderr.String(), "control message rejected") {
		t.Errorf("the note was reported as a rejection:\n%s", d.Stderr.String())
	}
}

// TestReservedAndUnknownExternalRefused: a reserved name, or is_external
// for a task no source has, is refused (exit 1), not saved, and starts
// no process; failsafing main or a reserved name is refused with exit 1.
func TestReservedAndUnknownExternalRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon()
	for _, tc := range []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"main", map[string]any{"is_external": true}, "main: refused (config not applied): task main: main is a reserved name (the daemon itself)"},
		{"MultiModule_control", map[string]any{}, "MultiModule_control: refused (config not applied): task MultiModule_control: MultiModule_control is a reserved name (the control queue)"},
		{"NoSuchTask", map[string]any{"is_external": 1}, "NoSuchTask: refused (config not applied): task NoSuchTask: is_external refused: no task NoSuchTask in builtin"},
		{"Example1", map[string]any{"is_external": 1}, "Example1: refused (config not applied): task Example1: is_external refused: no task Example1 in builtin; did you forget -p MultiModuleTest?"},
		{"MultiModule", map[string]any{"is_external": 1}, "MultiModule: refused (config not applied): host: task MultiModule is stateless"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := env.Run("config", "apply", writeConfig(t, map[string]any{tc.name: tc.cfg}))
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("config apply: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", code, tc.want, out, stderr)
			}
			// MultiModule keeps the config it had (the daemon's {}).
			if cfg, _ := env.Store().LoadConfig(tc.name); cfg != nil && (len(tc.cfg) == 0 || cfg["is_external"] != nil) {
				t.Errorf("refused config saved: %v", cfg)
			}
		})
	}
	for _, tc := range []struct{ name, want string }{
		{"main", "the daemon itself is never failsafed"},
		{"MultiModule", "the daemon itself is never failsafed"},
		{"OutOfBand", "OutOfBand is never failsafed"},
		{"MultiModule_control", "reserved name (the control queue)"},
		{"NoSuchTask", "no task NoSuchTask in builtin, and it is not configured"},
	} {
		out, stderr, code := env.Run("failsafe", tc.name)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("failsafe %s: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", tc.name, code, tc.want, out, stderr)
		}
	}
	for pid, cmdline := range env.Processes() {
		if strings.Contains(cmdline+" ", " -m ") {
			t.Errorf("process %d runs %q: a refused config started a process", pid, cmdline)
		}
	}
}

// TestSavedReservedExternalNotStarted: a config saved by a daemon that
// did not refuse it ({"main": {"is_external": true}}) is refused when the
// daemon restores it: no `-m main` process is started.
func TestSavedReservedExternalNotStarted(t *testing.T) {
	env := mmtest.NewEnv(t)
	if err := env.Store().SaveConfig("main", map[string]any{"is_external": true}); err != nil {
		t.Fatal(err)
	}
	if err := env.Store().SaveConfig("NoSuchTask", map[string]any{"is_external": true}); err != nil {
		t.Fatal(err)
	}
	d := env.StartDaemon()
	env.Eventually(wait, func() error {
		if !strings.Contains(d.Stderr.String(), "main is a reserved name (the daemon itself)") {
			return fmt.Errorf("no error record for the saved config of main on stderr:\n%s", d.Stderr)
		}
		return nil
	})
	// The supervisor's first pass runs at start; a process it started
	// would show within its back-off. The failsafe of a task that is not
	// configured is refused, so this round trip also shows the refused
	// configs were not applied.
	_, stderr, code := env.Run("failsafe", "NoSuchTask")
	if code != 1 || !strings.Contains(stderr, "not configured") {
		t.Errorf("failsafe NoSuchTask: exit %d, want 1 (not configured); stderr: %s", code, stderr)
	}
	for pid, cmdline := range env.Processes() {
		if strings.Contains(cmdline+" ", " -m ") {
			t.Errorf("process %d runs %q; daemon output:\n%s%s", pid, cmdline, d.Stdout, d.Stderr)
		}
	}
}

// TestCrashLoopFailsafeKeepsTheLoadFailureAlert: an external that cannot
// load its task (DoesNotCompile with is_external) crash-loops until the
// start.external failsafe stops it; the task_compile_failure.external
// alert that says why comes too, before the failsafe.
func TestCrashLoopFailsafeKeepsTheLoadFailureAlert(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	mon := fastMonitor(map[string]any{"local.admin.start.external": map[string]any{"levels": []any{
		map[string]any{"failsafe": 0.6}, map[string]any{"warn": 0.01},
	}}})
	mon["windows"] = map[string]any{"one_minute": 4, "five_minutes": 8}
	env.Configure(map[string]any{"MultiModule": mon, "DoesNotCompile": map[string]any{"is_external": true}})
	var cause bool
	waitAlert(t, env, "alerts_q", func(d map[string]any) bool {
		if d["task_name"] != "DoesNotCompile" {
			return false
		}
		if d["bucket_metric"] == "local.admin.task_compile_failure.external" && d["level"] != "ok" {
			cause = true
		}
		return d["failsafe"] == true
	})
	if !cause {
		t.Errorf("DoesNotCompile was failsafed with no task_compile_failure.external alert before it")
	}
}
