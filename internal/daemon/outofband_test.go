package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// oobProbe makes OtherExternalModule (running inside the daemon) write a
// record with text "oob_testing from OtherExternalModule" to channel.
func oobProbe(env *mmtest.Env, channel string) {
	env.Send("OtherExternalModule", message.Message{"oob_testing": channel, "ct": 1})
}

func TestOOBAlertToQueueAndLogToFile(t *testing.T) {
	env := mmtest.NewEnv(t)
	logFile := filepath.Join(t.TempDir(), "log.jsonl")
	d := env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q,log:"+logFile)
	env.Configure(map[string]any{"OtherExternalModule": map[string]any{}})

	oobProbe(env, "alert")
	rec := env.Recv("alerts_q", wait)
	if rec["oob_channel"] != "alert" || rec["task"] != "OtherExternalModule" || !strings.Contains(fmt.Sprint(rec["text"]), "oob_testing") {
		t.Fatalf("alert record on alerts_q: got %v, want channel alert from OtherExternalModule", rec)
	}
	if pid, _ := message.Int(rec["pid"]); int(pid) != d.PID() {
		t.Fatalf("record pid %d, want the daemon's %d", pid, d.PID())
	}

	oobProbe(env, "log")
	env.Eventually(wait, func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			m, err := message.Unmarshal([]byte(line))
			if err != nil {
				return fmt.Errorf("log file line %q is not JSON: %v", line, err)
			}
			if m["oob_channel"] != "log" {
				return fmt.Errorf("record of channel %v in the log file", m["oob_channel"])
			}
			if strings.Contains(fmt.Sprint(m["text"]), "oob_testing") {
				return nil
			}
		}
		return fmt.Errorf("no oob_testing record in %s yet", logFile)
	})
	// The log record did not go to the alert queue.
	stat, err := env.Client().Stat(t.Context(), "alerts_q")
	if err != nil || stat.Msgs != 0 {
		t.Fatalf("alerts_q after a log record: %+v (%v), want empty", stat, err)
	}
}

func TestOOBFiltersLive(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	env.Configure(map[string]any{
		"OtherExternalModule": map[string]any{},
		"OutOfBand": map[string]any{"alert": map[string]any{
			"exclude_matches": map[string]any{"no_quiet": map[string]any{"text": " special/quiet/"}},
		}},
	})
	// The filter takes effect once the OutOfBand task has its config:
	// wait for a round in which the probe's alert was dropped, then check
	// another round strictly.
	// Both records take the same path (the task handles its messages in
	// order), so the loud one arriving first means the quiet one was
	// dropped.
	round := func() (dropped bool) {
		env.Send("OtherExternalModule", message.Message{"oob_testing": "alert", "oob_text": "quiet one"})
		env.Send("OtherExternalModule", message.Message{"oob_testing": "alert", "oob_text": "loud one"})
		dropped = true
		for {
			m := env.Recv("alerts_q", wait)
			if m["text"] == "loud one" {
				return dropped
			}
			dropped = false
		}
	}
	env.Eventually(wait, func() error {
		if !round() {
			return fmt.Errorf("the excluded alert still arrives")
		}
		return nil
	})
	if !round() {
		t.Fatal("an excluded alert arrived after the filter took effect")
	}
	// Include only records from another task: the probe is dropped too.
	env.Configure(map[string]any{"OutOfBand": map[string]any{"alert": map[string]any{
		"include_matches": map[string]any{"probe_only": map[string]any{"task": "OtherExternalModule"}},
	}}})
	env.Eventually(wait, func() error {
		oobProbe(env, "alert")
		ctx, cancel := contextWithTimeout(t, 500*time.Millisecond)
		defer cancel()
		m, err := env.Client().Receive(ctx, "alerts_q")
		if err != nil {
			return fmt.Errorf("no alert passed the include filter yet: %v", err)
		}
		if m["task"] != "OtherExternalModule" {
			return fmt.Errorf("unexpected record %v", m)
		}
		return nil
	})
}

func TestOOBUnwritableFileReportedOnce(t *testing.T) {
	env := mmtest.NewEnv(t)
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := env.StartDaemon("-p", "MultiModuleTest", "-o", "log:"+filepath.Join(blocker, "x.log"))
	env.Configure(otherModuleConfig(1))
	for i := range 5 {
		probe(t, env, i) // the daemon keeps working…
	}
	env.Configure(map[string]any{"OtherExternalModule": map[string]any{}})
	for range 3 {
		oobProbe(env, "log")
	}
	env.Eventually(wait, func() error {
		if !strings.Contains(d.Stderr.String(), "not-a-dir") {
			return fmt.Errorf("no error about the unwritable log file on stderr yet")
		}
		return nil
	})
	probe(t, env, 1)
	n := 0
	for _, line := range d.Stderr.Lines() {
		if strings.Contains(line, "cannot deliver") && strings.Contains(line, filepath.Join(blocker, "x.log")) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the unwritable file was reported %d times, want once; stderr:\n%s", n, d.Stderr)
	}
}

func TestOOBRecordFromExternalHandledByDaemon(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	env.Configure(map[string]any{"OtherExternalModule": map[string]any{"is_external": true}})
	ext := externalPID(t, env, "OtherExternalModule", 0)
	oobProbe(env, "alert")
	rec := env.Recv("alerts_q", wait)
	if pid, _ := message.Int(rec["pid"]); int(pid) != ext {
		t.Fatalf("alert record pid %d, want the external's %d (written there, handled by the daemon)", pid, ext)
	}
	if rec["task"] != "OtherExternalModule" || rec["oob_channel"] != "alert" {
		t.Fatalf("record %v, want an alert of OtherExternalModule", rec)
	}
	// A log record from the external lands on the daemon's stdout (log:1).
	oobProbe(env, "log")
	d.WaitOutput(t, fmt.Sprintf(`"pid":%d,"task":"OtherExternalModule","text":"oob_testing from OtherExternalModule"`, ext), wait)
}
