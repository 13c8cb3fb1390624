package daemon_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/supervise"
	"github.com/multimodule/multimodule/transit"
)

// poisonMonitor is a monitor that failsafes an external started more than
// twice within 10 s (the default failsafes at 13 a minute: two messages
// that each crash the task six times), and warns at one start; windows of
// 10 s and 20 s, evaluated every 100 ms.
func poisonMonitor() map[string]any {
	return map[string]any{
		"intervals": map[string]any{"sample": 0.05, "evaluate": 0.1},
		"windows":   map[string]any{"one_minute": 10, "five_minutes": 20},
		"thresholds": map[string]any{"local.admin.start.external": map[string]any{"levels": []any{
			map[string]any{"failsafe": 0.25}, map[string]any{"warn": 0.05},
		}}},
	}
}

// sendPoisonStream sends ct = 0..n-1 to OtherExternalModule with a
// crash_me message after each ct in poisonAfter, all without waiting for
// the bus in between (so that they travel in batches), then flushes; with
// apart, each waits for the bus (a bus message of its own).
func sendPoisonStream(t *testing.T, env *mmtest.Env, n int, apart bool, poisonAfter ...int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	c := env.Client()
	send := func(m message.Message) {
		if apart {
			env.Send("OtherExternalModule", m)
			return
		}
		if err := c.SendAsync(ctx, "OtherExternalModule", m, transit.SendOptions{}); err != nil {
			t.Fatalf("send %v: %v", m, err)
		}
	}
	for i := range n {
		send(message.Message{"ct": i})
		for k, at := range poisonAfter {
			if at == i {
				send(message.Message{"crash_me": 1, "poison": k + 1})
			}
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashes counts the daemon's reports of a crash of task's external.
func crashes(d *mmtest.Proc, task string) int {
	re := regexp.MustCompile(`the external process of ` + task + ` \(pid \d+\) [^\n]*restarting`)
	return len(re.FindAllString(d.Stdout.String()+d.Stderr.String(), -1))
}

// A message that kills its external is handed to it again at most
// max_crash_redeliveries times (default 1), then dead-lettered with the
// crash's exit status; the messages around it are all delivered in
// order, and the restarts it caused do not failsafe the task.
func TestPoisonMessageDeadLetteredWithoutFailsafe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     any // max_crash_redeliveries; nil: the default (1)
		poison  []int
		crashes int  // per poison message
		apart   bool // each message a bus message of its own (else batches)
	}{
		{"one poison message", nil, []int{20}, 2, false},
		{"two poison messages", nil, []int{10, 30}, 2, false},
		{"three poison messages", nil, []int{5, 15, 25}, 2, false},
		{"three poison messages apart", nil, []int{5, 15, 25}, 2, true},
		{"max_crash_redeliveries 0", 0, []int{10, 30}, 1, false},
		{"max_crash_redeliveries 3", 3, []int{10}, 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := mmtest.NewEnv(t)
			d := env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
			cfg := map[string]any{"increment_by": 1, "is_external": true}
			if tc.max != nil {
				cfg["max_crash_redeliveries"] = tc.max
			}
			env.Configure(map[string]any{
				"MultiModule":         poisonMonitor(),
				"Router":              routeTo(map[string]string{"OtherExternalModule": "test_out"}),
				"OtherExternalModule": cfg,
			})
			externalPID(t, env, "OtherExternalModule", 0)
			const n = 40
			sendPoisonStream(t, env, n, tc.apart, tc.poison...)

			// Every other message comes out, in order.
			_, dups := stream(t, env, "test_out", n, 1)
			t.Logf("%d duplicated outputs (redelivered after a crash)", dups)

			// Each poison message is in the dead-letter queue, once, with
			// the reason and the exit status of the crash.
			for k := range tc.poison {
				dl := env.Recv(transit.DeadLetterQueue, wait)
				meta, _ := dl[".ipc_transit_meta"].(map[string]any)
				info, _ := meta["dead_letter"].(map[string]any)
				if p, _ := message.Int(dl["poison"]); p != int64(k+1) || info == nil {
					t.Fatalf("dead letter %d: %v, want poison message %d with a dead_letter record", k, dl, k+1)
				}
				reason, _ := info["reason"].(string)
				if info["exit_status"] != "killed by signal 9" || !strings.Contains(reason, "killed by signal 9") ||
					!strings.Contains(reason, fmt.Sprintf("died %d times", tc.crashes)) || info["queue"] != "OtherExternalModule" {
					t.Fatalf("dead letter %d: record %v, want the reason with %d crashes and exit status \"killed by signal 9\"", k, info, tc.crashes)
				}
				if c, _ := message.Int(info["crashes"]); c != int64(tc.crashes) {
					t.Fatalf("dead letter %d: crashes %v, want %d", k, info["crashes"], tc.crashes)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			if m, err := env.Client().Receive(ctx, transit.DeadLetterQueue); err == nil {
				t.Fatalf("an extra dead letter: %v", m)
			}
			cancel()

			if got, want := crashes(d, "OtherExternalModule"), tc.crashes*len(tc.poison); got != want {
				t.Fatalf("the external crashed %d times, want %d (%d per poison message)", got, want, tc.crashes)
			}

			// Not failsafed: the start-rate level of the task goes back to
			// ok once its first start leaves the window, with no failsafe
			// before.
			waitAlert(t, env, "alerts_q", func(a map[string]any) bool {
				if a["task_name"] != "OtherExternalModule" || a["bucket_metric"] != "local.admin.start.external" {
					return false
				}
				if a["level"] == "failsafe" {
					t.Fatalf("failsafed: %v", a)
				}
				return a["level"] == "ok"
			})
			if fs, _ := env.Store().ReadFailsafe("OtherExternalModule"); fs != nil {
				t.Fatalf("failsafed: %v", fs)
			}
			// And it still works.
			env.Send("OtherExternalModule", message.Message{"ct": n})
			for {
				out := env.Recv("test_out", wait)
				if ct, _ := message.Int(out["ct"]); ct == n {
					break
				}
			}
		})
	}
}

// A task that crashes on every message is not healthy: its messages are
// dead-lettered one after the other, but its restarts count, and the
// monitor failsafes it.
func TestCrashingOnEveryMessageFailsafes(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	env.Configure(map[string]any{
		"MultiModule":         poisonMonitor(),
		"OtherExternalModule": map[string]any{"is_external": true},
	})
	externalPID(t, env, "OtherExternalModule", 0)
	for k := range 6 {
		env.Send("OtherExternalModule", message.Message{"crash_me": 1, "poison": k + 1})
	}
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", "local.admin.start.external", "failsafe"))
	env.Eventually(wait, func() error {
		if fs, _ := env.Store().ReadFailsafe("OtherExternalModule"); fs == nil {
			return fmt.Errorf("not failsafed yet")
		}
		return nil
	})
	// What it got to is in the dead-letter queue, from the first on.
	dl := env.Recv(transit.DeadLetterQueue, wait)
	if p, _ := message.Int(dl["poison"]); p != 1 {
		t.Fatalf("first dead letter %v, want poison message 1", dl)
	}
}

// A message in flight at one crash of its external (a kill -9 from
// outside) is handed to the task again and handled, not dead-lettered
// (max_crash_redeliveries is 1); once the task got past it, the restart
// counts toward the start rate like any other.
func TestMessageInFlightAtOneCrashIsRetried(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	env.Configure(map[string]any{
		"MultiModule": map[string]any{
			"intervals": map[string]any{"sample": 0.05, "evaluate": 0.1},
			"windows":   map[string]any{"one_minute": 30, "five_minutes": 60},
			// severe from a second start within 30 s
			"thresholds": map[string]any{"local.admin.start.external": map[string]any{"levels": []any{
				map[string]any{"severe": 0.05}, map[string]any{"warn": 0.02},
			}}},
		},
		"Router":              routeTo(map[string]string{"OtherExternalModule": "test_out"}),
		"OtherExternalModule": map[string]any{"increment_by": 1, "is_external": true},
	})
	pid := externalPID(t, env, "OtherExternalModule", 0)
	env.Send("OtherExternalModule", message.Message{"ct": 0})
	env.Recv("test_out", wait)
	env.Send("OtherExternalModule", message.Message{"ct": 1, "spin_cpu": 1.0})
	// Killed while it handles ct 1 (by identity: pid and start time).
	marker := filepath.Join(env.StateDir, "OtherExternalModule.inflight")
	env.Eventually(wait, func() error {
		if k, err := supervise.ReadInFlight(marker); err != nil || !k.Handling() {
			return fmt.Errorf("no message in flight yet (%+v, %v)", k, err)
		}
		return nil
	})
	st, err := env.Store().LoadStatus("OtherExternalModule")
	if err != nil || st == nil || st.PID != pid {
		t.Fatalf("status %+v (%v), want pid %d", st, err, pid)
	}
	p, err := supervise.Adopt(st.Identity(), supervise.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	externalPID(t, env, "OtherExternalModule", pid)
	// (ct 0 may come again: its acknowledgement may not have gone out.)
	for {
		out := env.Recv("test_out", wait)
		ct, _ := message.Int(out["ct"])
		if ct == 1 {
			break
		}
		if ct != 0 {
			t.Fatalf("got %v, want ct 1 handled on the restarted process", out)
		}
	}
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", "local.admin.start.external", "severe"))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if m, err := env.Client().Receive(ctx, transit.DeadLetterQueue); err == nil {
		t.Fatalf("dead-lettered: %v", m)
	}
}
