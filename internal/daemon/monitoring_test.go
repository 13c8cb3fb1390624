package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/supervise"
)

// fastMonitor shortens the monitor's clocks so a test sees levels within
// seconds: sample every 50 ms, evaluate every 100 ms, windows of 1 s and
// 2 s (a window reports after half of it is covered).
//
// With windows this short a single start of an external is a rate of
// 1/s, above the default failsafe level for starts (0.2/s): tests that do
// not set the start thresholds themselves turn them off.
func fastMonitor(thresholds map[string]any) map[string]any {
	if thresholds == nil {
		thresholds = map[string]any{}
	}
	if _, ok := thresholds["local.admin.start.external"]; !ok {
		thresholds["local.admin.start.external"] = map[string]any{"levels": []any{}}
	}
	return map[string]any{
		"intervals":  map[string]any{"sample": 0.05, "evaluate": 0.1},
		"windows":    map[string]any{"one_minute": 1, "five_minutes": 2},
		"thresholds": thresholds,
	}
}

// alerts reads monitor alert records from queue q until f accepts one.
func waitAlert(t *testing.T, env *mmtest.Env, q string, f func(details map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	var (
		seen []string
		err  error
	)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(t.Context(), deadline)
		var rec map[string]any
		rec, err = env.Client().Receive(ctx, q)
		cancel()
		if err != nil {
			break // reported below, with what came
		}
		d, _ := rec["details"].(map[string]any)
		if d == nil {
			continue
		}
		seen = append(seen, fmt.Sprintf("%v %v=%v", d["task_name"], d["bucket_metric"], d["level"]))
		if f(d) {
			return d
		}
	}
	t.Fatalf("no matching alert within %v (%v); saw: %v", wait, err, seen)
	return nil
}

func level(task, metric, lvl string) func(map[string]any) bool {
	return func(d map[string]any) bool {
		return d["task_name"] == task && d["bucket_metric"] == metric && d["level"] == lvl
	}
}

func statusOf(t *testing.T, env *mmtest.Env, task string) map[string]any {
	t.Helper()
	out, stderr, code := env.Run("status", "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var lines []map[string]any
	if err := json.Unmarshal([]byte(out), &lines); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, l := range lines {
		if l["task"] == task {
			return l
		}
	}
	t.Fatalf("status has no line for %s:\n%s", task, out)
	return nil
}

func TestFailsafeOnMemoryLeakAndUnfailsafe(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	const mem = "local.memory.vss_of_box_physical"
	st, err := env.Store().LoadStatus("main")
	if err != nil || st == nil {
		t.Fatal(err)
	}
	// No memory levels until a leak's cost in this build is known.
	env.Configure(map[string]any{
		"MultiModule":         fastMonitor(map[string]any{mem: map[string]any{"levels": []any{}}}),
		"OtherExternalModule": map[string]any{"is_external": true},
		"Router":              routeTo(map[string]string{"OtherExternalModule": "test_out"}),
	})
	pid := externalPID(t, env, "OtherExternalModule", 0)
	leak := func(mb int) {
		env.Send("OtherExternalModule", message.Message{"leak_memory": mb << 20, "ct": 0})
		env.Recv("test_out", wait)
	}
	// Levels relative to what a leak of unitMB costs the process, as the
	// monitor measures it (resident memory ÷ the box's): about unitMB,
	// but several times that under the race detector (its shadow memory).
	const unitMB = 40
	sampler, err := monitor.NewSampler()
	if err != nil {
		t.Fatal(err)
	}
	memOf := func() float64 {
		t.Helper()
		s, _, err := sampler.Sample(pid, time.Now())
		if err != nil {
			t.Fatalf("sample the external process: %v", err)
		}
		return s.MemFractionOfBox
	}
	base := memOf()
	leak(unitMB)
	unit := memOf() - base
	if unit <= 0 {
		t.Fatalf("a leak of %d MB did not grow the process (%v of the box before, %v after)", unitMB, base, base+unit)
	}
	// From here on the process holds base+1 unit: warn at 1.5 units more
	// than base, severe at 3.5, failsafe at 5.5; it goes to 2, 4, 6.
	env.Configure(map[string]any{
		"MultiModule": fastMonitor(map[string]any{mem: map[string]any{"levels": []any{
			map[string]any{"failsafe": base + 5.5*unit}, map[string]any{"severe": base + 3.5*unit}, map[string]any{"warn": base + 1.5*unit},
		}}}),
		"OtherExternalModule": map[string]any{"is_external": true},
		"Router":              routeTo(map[string]string{"OtherExternalModule": "test_out"}),
	})
	leak(unitMB)
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", mem, "warn"))
	leak(2 * unitMB)
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", mem, "severe"))
	leak(2 * unitMB)
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", mem, "failsafe"))
	env.Eventually(wait, func() error {
		fs, err := env.Store().ReadFailsafe("OtherExternalModule")
		if fs == nil {
			return fmt.Errorf("no failsafe file yet (%v)", err)
		}
		return nil
	})
	env.Eventually(wait, func() error {
		if statusAlive(env, "OtherExternalModule", pid) {
			return fmt.Errorf("process %d still runs", pid)
		}
		return nil
	})
	// Its messages wait.
	for i := range 5 {
		env.Send("OtherExternalModule", message.Message{"ct": i})
	}
	time.Sleep(300 * time.Millisecond) // give a wrongly restarted task time to take them (pacing, not synchronisation)
	line := statusOf(t, env, "OtherExternalModule")
	if line["failsafed"] != true || line["running"] != false || line["queue_depth"].(float64) != 5 {
		t.Fatalf("status while failsafed: %v, want failsafed, not running, 5 waiting", line)
	}
	if _, stderr, code := env.Run("unfailsafe", "OtherExternalModule"); code != 0 {
		t.Fatalf("unfailsafe: exit %d: %s", code, stderr)
	}
	for i := range 5 {
		out := env.Recv("test_out", wait)
		if ct, _ := message.Int(out["ct"]); ct != int64(i) {
			t.Fatalf("after unfailsafe got ct %v, want %d (the waiting messages, in order)", out["ct"], i)
		}
	}
	if fs, _ := env.Store().ReadFailsafe("OtherExternalModule"); fs != nil {
		t.Fatalf("failsafe file still there after unfailsafe: %v", fs)
	}
}

func statusAlive(env *mmtest.Env, task string, pid int) bool {
	st, _ := env.Store().LoadStatus(task)
	return st != nil && st.PID == pid && st.Running()
}

// TestCPUSpinAlerts: an external burning CPU raises the CPU alert. The
// threshold follows the CPU the spinner really gets on this machine (a
// loaded machine gives it less than a core): the test measures the
// spinner's own CPU rate from /proc, then sets the warn level to a quarter
// of it. An idle external uses next to none, so a monitor that did not see
// the spin would not alert.
func TestCPUSpinAlerts(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	const cpu = "local.cpu.one_core"
	monitorAt := func(warn float64) map[string]any {
		return fastMonitor(map[string]any{cpu: map[string]any{"levels": []any{map[string]any{"warn": warn}}, "can_failsafe": false}})
	}
	env.Configure(map[string]any{
		"MultiModule":         monitorAt(1e6),
		"OtherExternalModule": map[string]any{"is_external": true},
	})
	pid := externalPID(t, env, "OtherExternalModule", 0)
	// Back-to-back spins of 2 s each: the handler returns between them, so
	// stopping the daemon at the end waits for one at most.
	for range 15 {
		env.Send("OtherExternalModule", message.Message{"spin_cpu": 2})
	}
	rate := spinRate(t, env, pid)
	env.Configure(map[string]any{"MultiModule": monitorAt(rate / 4)})
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", cpu, "warn"))
}

// spinRate waits until process pid has used 0.3 s of CPU more than now and
// returns the rate (cores) at which it did.
func spinRate(t *testing.T, env *mmtest.Env, pid int) float64 {
	t.Helper()
	start, err := procid.UsageOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var rate float64
	env.Eventually(wait, func() error {
		u, err := procid.UsageOf(pid)
		if err != nil {
			return err
		}
		used := u.CPUSeconds - start.CPUSeconds
		if used < 0.3 {
			return fmt.Errorf("the spinner (pid %d) used %.2f s of CPU, want 0.3 s", pid, used)
		}
		rate = used / time.Since(t0).Seconds()
		return nil
	})
	t.Logf("the spinner gets %.2f cores on this machine", rate)
	return rate
}

func TestQueueFullnessAlertsAndRecovers(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	const full = "local.queue.bytes_of_max"
	// The default capacity is 1,000,000 messages: 20 and 60 waiting
	// messages are "full" at these levels.
	env.Configure(map[string]any{
		"MultiModule":         fastMonitor(map[string]any{full: map[string]any{"levels": []any{map[string]any{"severe": 50e-6}, map[string]any{"warn": 15e-6}}}}),
		"OtherExternalModule": map[string]any{},
	})
	env.Send("OtherExternalModule", message.Message{"fill_queue": "junk_q", "fill_queue_bytes": 25 * 1024})
	waitAlert(t, env, "alerts_q", level("junk_q", full, "warn"))
	env.Send("OtherExternalModule", message.Message{"fill_queue": "junk_q", "fill_queue_bytes": 50 * 1024})
	waitAlert(t, env, "alerts_q", level("junk_q", full, "severe"))
	if out, stderr, code := env.Run("recv", "junk_q", "--count", "75", "--timeout", "10s"); code != 0 {
		t.Fatalf("draining junk_q: exit %d: %s %s", code, stderr, out)
	}
	waitAlert(t, env, "alerts_q", level("junk_q", full, "ok"))
}

func TestHandlerFailuresAlert(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	const fail = "local.admin.task_message_failure"
	env.Configure(map[string]any{
		"MultiModule":         fastMonitor(nil), // default thresholds: severe above 0.1 failures/s
		"OtherExternalModule": map[string]any{},
	})
	for range 20 {
		env.Send("OtherExternalModule", message.Message{"uncaught_exception": 1})
	}
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", fail, "severe"))
}

func TestLoadFailureAlertsExternalThenInternal(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	env.Configure(map[string]any{
		// Starts are not what this test is about: a failsafe for the
		// restart rate would end the loop before the load failures alert.
		"MultiModule":    fastMonitor(map[string]any{"local.admin.start.external": map[string]any{"levels": []any{}}}),
		"DoesNotCompile": map[string]any{"is_external": true},
	})
	waitAlert(t, env, "alerts_q", level("DoesNotCompile", "local.admin.task_compile_failure.external", "severe"))
	env.Configure(map[string]any{"DoesNotCompile": map[string]any{"is_external": false}})
	waitAlert(t, env, "alerts_q", func(d map[string]any) bool {
		return d["task_name"] == "DoesNotCompile" && d["bucket_metric"] == "local.admin.task_compile_failure.internal" && d["level"] != "ok"
	})
}

func TestThresholdChangeLive(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	const fds = "local.handles.fh.count"
	set := func(warn float64) {
		env.Configure(map[string]any{"MultiModule": fastMonitor(map[string]any{fds: map[string]any{"levels": []any{map[string]any{"warn": warn}}}})})
	}
	set(1) // the daemon surely has more than one open file
	waitAlert(t, env, "alerts_q", level("main", fds, "warn"))
	set(1e6)
	waitAlert(t, env, "alerts_q", level("main", fds, "ok"))
}

func TestCrashLoopFailsafes(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:alerts_q")
	env.Configure(map[string]any{
		"MultiModule": fastMonitor(map[string]any{"local.admin.start.external": map[string]any{"levels": []any{
			map[string]any{"failsafe": 1.5}, map[string]any{"warn": 0.5},
		}}}),
		"OtherExternalModule": map[string]any{"is_external": true},
	})
	externalPID(t, env, "OtherExternalModule", 0)
	// Every start dies at once, with no message in flight: a crash loop
	// (the restarts a poison message causes are not counted, see
	// TestPoisonMessageDeadLetteredWithoutFailsafe). Each process is
	// killed once, by its identity (pid and start time).
	looped := make(chan struct{})
	go func() {
		defer close(looped)
		killed := map[int]bool{}
		end := time.Now().Add(wait)
		for time.Now().Before(end) {
			if fs, _ := env.Store().ReadFailsafe("OtherExternalModule"); fs != nil {
				return
			}
			if st, _ := env.Store().LoadStatus("OtherExternalModule"); st != nil && !killed[st.PID] {
				if p, err := supervise.Adopt(st.Identity(), supervise.Expect{}); err == nil {
					killed[st.PID] = true
					_ = p.Signal(syscall.SIGKILL)
					<-p.Done()
				}
			}
			time.Sleep(5 * time.Millisecond) // polling for the next process
		}
	}()
	waitAlert(t, env, "alerts_q", level("OtherExternalModule", "local.admin.start.external", "failsafe"))
	<-looped
	env.Eventually(wait, func() error {
		if fs, _ := env.Store().ReadFailsafe("OtherExternalModule"); fs == nil {
			return fmt.Errorf("not failsafed yet")
		}
		return nil
	})
	// No more starts once failsafed.
	starts := strings.Count(d.Stdout.String()+d.Stderr.String(), "restarting")
	time.Sleep(time.Second) // a restart would come within the back-off (≤ 2 s); pacing, not synchronisation
	env.Eventually(wait, func() error {
		st, _ := env.Store().LoadStatus("OtherExternalModule")
		if st != nil && st.Running() {
			return fmt.Errorf("a failsafed task's process runs: %+v", st)
		}
		return nil
	})
	if after := strings.Count(d.Stdout.String()+d.Stderr.String(), "restarting"); after > starts+1 {
		t.Fatalf("%d more restarts after the failsafe", after-starts)
	}
}

func TestFailsafeByHandInternalTask(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 1)
	if _, stderr, code := env.Run("failsafe", "OtherModule", "--reason", "maintenance"); code != 0 {
		t.Fatalf("failsafe: exit %d: %s", code, stderr)
	}
	env.Eventually(wait, func() error {
		line := statusOf(t, env, "OtherModule")
		if line["failsafed"] != true || !strings.Contains(fmt.Sprint(line["failsafe_reason"]), "maintenance") {
			return fmt.Errorf("status %v, want failsafed by hand for maintenance", line)
		}
		return nil
	})
	for i := range 3 {
		env.Send("OtherModule", message.Message{"ct": i})
	}
	// Unloaded: the messages wait in its queue, nothing comes out.
	ctx, cancel := contextWithTimeout(t, 300*time.Millisecond)
	defer cancel()
	if m, err := env.Client().Receive(ctx, "test_out"); err == nil {
		t.Fatalf("a failsafed internal task produced %v", m)
	}
	if _, stderr, code := env.Run("unfailsafe", "OtherModule"); code != 0 {
		t.Fatalf("unfailsafe: exit %d: %s", code, stderr)
	}
	for i := range 3 {
		out := env.Recv("test_out", wait)
		if ct, _ := message.Int(out["ct"]); ct != int64(i) {
			t.Fatalf("after unfailsafe: ct %v, want %d", out["ct"], i)
		}
	}
	// The daemon itself is never failsafed.
	if _, stderr, _ := env.Run("failsafe", "main"); stderr != "" {
		t.Logf("failsafe main: %s", stderr)
	}
	if fs, _ := env.Store().ReadFailsafe("main"); fs != nil {
		t.Fatalf("the daemon was failsafed: %v", fs)
	}
}
