package original

import (
	"fmt"
	"syscall"
	"testing"
)

// The monitoring scenarios shorten the monitor's clocks (fastMonitor) and
// set thresholds that suit a shared test machine: the original's defaults
// need a process to use 10 % of the box's memory or 1.4 cores.

const (
	memMetric   = "local.memory.vss_of_box_physical"
	cpuMetric   = "local.cpu.one_core"
	queueMetric = "local.queue.bytes_of_max"
)

const mib = 1 << 20

// memLevels are memory thresholds (fractions of the box) at base plus
// warn, severe and failsafe MiB.
func memLevels(t *testing.T, base float64, warn, severe, failsafe float64, canFailsafe bool) map[string]any {
	total := memTotal(t)
	return levels(canFailsafe,
		"failsafe", (base+failsafe*mib)/total,
		"severe", (base+severe*mib)/total,
		"warn", (base+warn*mib)/total)
}

// leak makes the external hold n more MiB, and waits for its output.
func leak(s *stream, n int) {
	s.send(map[string]any{"leak_memory": n * mib})
	s.receive("external", nil)
}

// t/failsafe-mem.t: an external that leaks memory goes through warn and
// severe to failsafe: it is killed and stays down, its messages wait; the
// others go on; unfailsafe brings it back and it handles what waited.
// Adapted: thresholds set 40/80/120 MiB above the external's resident
// memory at the start, and the leak in steps of 60 MiB, each step waiting
// for the level it must reach.
func TestFailsafeMem(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	om := w.newStream("OtherModule", d)
	w.send(ctlQ, wrapped(streamConfig(oem, om, nil)))
	warmUp(oem, om, nil)
	ext := w.externalPID("OtherExternalModule", d.pid())
	if s := w.status("OtherExternalModule"); s["failsafed"] != false {
		t.Fatalf("status %v, want not failsafed", s)
	}

	base := rss(t, ext)
	w.send(ctlQ, wrapped(map[string]any{"MultiModule": fastMonitor(map[string]any{
		memMetric: memLevels(t, base, 40, 80, 120, true),
	})}))
	a := w.alerts()
	leak(oem, 60)
	a.waitFor("OtherExternalModule", memMetric, "warn", "severe")
	leak(oem, 40)
	a.waitFor("OtherExternalModule", memMetric, "severe")
	leak(oem, 60)
	fs := a.waitFor("OtherExternalModule", memMetric, "failsafe")
	if fs["failsafe"] != true {
		t.Errorf("the failsafe alert does not say it failsafed the task: %v", fs)
	}
	for _, l := range []string{"warn", "severe", "failsafe"} {
		if !a.got("OtherExternalModule", memMetric, l) {
			t.Errorf("no %s alert; alerts: %v", l, a.log)
		}
	}

	w.waitGone("the failsafed external", ext)
	om.send(nil)
	om.receive("internal", nil)
	w.eventually("status shows the failsafe", func() error {
		if s := w.status("OtherExternalModule"); s["failsafed"] != true || s["running"] != false {
			return fmt.Errorf("status %v", s)
		}
		return nil
	})
	oem.send(nil)
	if m, err := oem.tryReceive("external", nil, quiet); err == nil {
		t.Fatalf("a failsafed task handled a message: %v", m)
	}
	// The original took the waiting message off the queue by hand; here
	// it must simply be waiting there, and come through after unfailsafe.
	if s := w.status("OtherExternalModule"); num(s["queue_depth"]) < 1 {
		t.Errorf("status %v: want the message waiting in the queue", s)
	}
	w.mm("unfailsafe", "-q", ctlQ, "OtherExternalModule")
	oem.send(nil)
	oem.receive("external", nil)
	oem.receive("external", nil)
	w.eventually("status shows it back", func() error {
		if s := w.status("OtherExternalModule"); s["failsafed"] != false || s["running"] != true {
			return fmt.Errorf("status %v", s)
		}
		return nil
	})
	oem.send(nil)
	oem.send(nil)
	om.send(nil)
	om.send(nil)
	oem.receive("external", nil)
	oem.receive("external", nil)
	om.receive("internal", nil)
	om.receive("internal", nil)
	w.cleanlyExit(d, true)
}

// monitorConfig is the config of the single-stream monitoring scenarios
// (monitor-cpu, monitor-mem, monitor-queues, update-threshold).
func monitorConfig(oem *stream, monitor map[string]any) map[string]any {
	cfg := streamConfig(oem, nil, map[string]any{"transform": map[string]any{"hi": "there"}})
	cfg["MultiModule"] = monitor
	return cfg
}

// t/monitor-cpu.t: an external that burns CPU raises cpu alerts, which
// clear when it stops. Adapted: levels warn > 0.05 and severe > 0.15
// cores (one busy thread may get little of a shared, loaded two-core box),
// no failsafe; spins of 3 s. The original's first `ok` came from its start-up alert; here `ok`
// is the recovery.
func TestMonitorCPU(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	w.send(ctlQ, wrapped(monitorConfig(oem, fastMonitor(map[string]any{
		cpuMetric: levels(false, "severe", 0.15, "warn", 0.05),
	}))))
	a := w.alerts()
	for range 6 {
		oem.send(nil)
		oem.receive("external", map[string]any{"hi": "there"})
	}
	all := func() bool {
		return a.got("OtherExternalModule", cpuMetric, "warn") && a.got("OtherExternalModule", cpuMetric, "severe") && a.got("OtherExternalModule", cpuMetric, "ok")
	}
	// Each spin must take the level up and, once over, back to ok; warn
	// is passed on the way up or down (levels are evaluated every 0.25 s,
	// so a pass through a band can be missed: spin again then).
	for i := 0; i < 15 && !all(); i++ {
		oem.send(map[string]any{"spin_cpu": 3})
		m := oem.receive("external", map[string]any{"hi": "there"})
		if num(m["spin_cpu"]) != 3 {
			t.Errorf("spin_cpu %v, want 3", m["spin_cpu"])
		}
		a.waitFor("OtherExternalModule", cpuMetric, "warn", "severe")
		a.seen["OtherExternalModule:"+cpuMetric]["ok"] = 0
		a.waitFor("OtherExternalModule", cpuMetric, "ok")
	}
	for _, l := range []string{"warn", "severe", "ok"} {
		if !a.got("OtherExternalModule", cpuMetric, l) {
			t.Errorf("no %s alert; alerts: %v", l, a.log)
		}
	}
	w.cleanlyExit(d, true)
}

// t/monitor-mem.t: an external that leaks memory raises warn, then
// severe. Adapted: thresholds 40/80 MiB above its resident memory at the
// start (failsafe far above), and `ok` — the original's start-up alert —
// is asserted on recovery: SIGTERM makes the external exit, the daemon
// starts it again with its memory back to normal.
func TestMonitorMem(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	w.send(ctlQ, wrapped(monitorConfig(oem, map[string]any{})))
	for range 6 {
		oem.send(nil)
		oem.receive("external", map[string]any{"hi": "there"})
	}
	ext := w.externalPID("OtherExternalModule", d.pid())
	w.send(ctlQ, wrapped(map[string]any{"MultiModule": fastMonitor(map[string]any{
		memMetric: memLevels(t, rss(t, ext), 40, 80, 4096, false),
	})}))
	a := w.alerts()
	leak(oem, 60)
	a.waitFor("OtherExternalModule", memMetric, "warn", "severe")
	leak(oem, 40)
	a.waitFor("OtherExternalModule", memMetric, "severe")
	if err := syscall.Kill(ext, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.waitGone("the leaking external", ext)
	oem.send(nil)
	oem.receive("external", nil)
	a.waitFor("OtherExternalModule", memMetric, "ok")
	for _, l := range []string{"warn", "severe", "ok"} {
		if !a.got("OtherExternalModule", memMetric, l) {
			t.Errorf("no %s alert; alerts: %v", l, a.log)
		}
	}
	w.cleanlyExit(d, true)
}

// t/monitor-queues.t: an external fills a queue nobody reads (fill_queue:
// one junk message per request for small sizes) until its fullness is
// severe; draining it brings `ok`. Adapted: the default capacity is a
// million messages, so the levels are warn above 3 and severe above 6
// waiting messages.
func TestMonitorQueues(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	w.send(ctlQ, wrapped(monitorConfig(oem, fastMonitor(map[string]any{
		queueMetric: levels(false, "severe", 6.5e-6, "warn", 3.5e-6),
	}))))
	a := w.alerts()
	for range 6 {
		oem.send(nil)
		oem.receive("external", nil)
	}
	burn := 16
	for i := 0; i < 200 && !a.got("test_queue_full", queueMetric, "severe"); i++ {
		oem.send(map[string]any{"fill_queue": "test_queue_full", "fill_queue_bytes": burn})
		burn += 16
		m := oem.receive("external", map[string]any{"hi": "there"})
		if m["fill_queue"] != "test_queue_full" {
			t.Errorf("fill_queue %v", m["fill_queue"])
		}
		a.tryWaitFor(quiet/5, "test_queue_full", queueMetric, "severe")
	}
	a.waitFor("test_queue_full", queueMetric, "severe")
	w.drain("test_queue_full")
	a.waitFor("test_queue_full", queueMetric, "ok")
	for _, l := range []string{"warn", "severe", "ok"} {
		if !a.got("test_queue_full", queueMetric, l) {
			t.Errorf("no %s alert; alerts: %v", l, a.log)
		}
	}
	w.cleanlyExit(d, true)
}

// t/monitor-restarts.t: crashing an external again and again raises
// alerts on its start rate (local.admin.start.external). Adapted: with the
// short windows, levels warn > 0.1 and severe > 0.6 starts/s, failsafe out
// of reach.
func TestMonitorRestarts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	om := w.newStream("OtherModule", d)
	cfg := streamConfig(oem, om, nil)
	cfg["MultiModule"] = fastMonitor(map[string]any{
		"local.admin.start.external": levels(true, "failsafe", 100, "severe", 0.6, "warn", 0.1),
	})
	w.send(ctlQ, wrapped(cfg))
	warmUp(oem, om, nil)
	om.send(nil)
	om.send(nil)
	om.receive("internal", nil)
	oem.send(nil)
	oem.receive("external", nil)
	om.send(nil)
	om.receive("internal", nil)
	om.receive("internal", nil)

	a := w.alerts()
	const metric = "local.admin.start.external"
	for i := 0; i < 100; i++ {
		crash := map[string]any{"crash_me": 1}
		for k, v := range oem.match {
			crash[k] = v
		}
		w.send(oem.task, crash)
		if _, ok := a.tryWaitFor(quiet, "OtherExternalModule", metric, "warn", "severe"); ok {
			break
		}
	}
	a.waitFor("OtherExternalModule", metric, "warn", "severe")
	w.cleanlyExit(d, true)
}

// t/task-does-not-compile.t: a task that cannot be loaded is reported as
// a load failure (local.admin.task_compile_failure.external while it is
// configured external, .internal once it is internal), and the rest goes
// on.
func TestTaskDoesNotCompile(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	cfg := streamConfig(oem, nil, nil)
	cfg["MultiModule"] = fastMonitor(nil)
	cfg["TaskDoesNotCompile"] = map[string]any{"is_external": 1, "whatever": "config"}
	w.send(ctlQ, wrapped(cfg))
	a := w.alerts()
	const ext, internal = "local.admin.task_compile_failure.external", "local.admin.task_compile_failure.internal"
	for i := 0; i < 60; i++ {
		oem.send(nil)
		oem.receive("", nil)
		w.send("TaskDoesNotCompile", map[string]any{"n": "a"})
		if _, ok := a.tryWaitFor(quiet/5, "TaskDoesNotCompile", ext, "warn", "severe"); ok {
			break
		}
	}
	a.waitFor("TaskDoesNotCompile", ext, "warn", "severe")

	cfg["TaskDoesNotCompile"] = map[string]any{"whatever": "config"}
	w.send(ctlQ, wrapped(cfg))
	for i := 0; i < 60; i++ {
		oem.send(nil)
		oem.receive("", nil)
		if _, ok := a.tryWaitFor(quiet/5, "TaskDoesNotCompile", internal, "warn", "severe"); ok {
			break
		}
	}
	a.waitFor("TaskDoesNotCompile", internal, "warn", "severe")
	if s := w.status("TaskDoesNotCompile"); s == nil || s["running"] == true {
		t.Errorf("status of TaskDoesNotCompile: %v, want a line, not running", s)
	}
	w.cleanlyExit(d, true)
}

// t/task-message-failure.t: handler failures (uncaught_exception) raise
// local.admin.task_message_failure alerts up to severe; the task goes on
// with the next message each time.
func TestTaskMessageFailure(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	cfg := streamConfig(oem, nil, nil)
	cfg["MultiModule"] = fastMonitor(nil)
	cfg["StatelessProducer"] = map[string]any{"extra_stuff": map[string]any{"extra": "stuff"}}
	w.send(ctlQ, wrapped(cfg))
	a := w.alerts()
	for range 6 {
		oem.send(nil)
		oem.receive("external", nil)
	}
	const metric = "local.admin.task_message_failure"
	for i := 0; i < 200 && !a.got("OtherExternalModule", metric, "severe"); i++ {
		oem.send(nil)
		oem.receive("external", nil)
		w.send(oem.task, map[string]any{"uncaught_exception": "boom"})
		a.tryWaitFor(quiet/5, "OtherExternalModule", metric, "severe")
	}
	a.waitFor("OtherExternalModule", metric, "severe")
	oem.send(nil)
	oem.receive("external", nil)
	w.cleanlyExit(d, true)
}

// t/update-threshold.t: thresholds changed while running take effect: a
// leak raises warn; raising the warn level above the current value
// brings `ok`. Adapted: levels relative to the external's resident memory
// (the original's 0.1 of the box is gigabytes here).
func TestUpdateThreshold(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.start(alertOpt...)
	oem := w.newStream("OtherExternalModule", d)
	cfg := streamConfig(oem, nil, nil)
	w.send(ctlQ, wrapped(cfg))
	for range 6 {
		oem.send(nil)
		oem.receive("external", nil)
	}
	ext := w.externalPID("OtherExternalModule", d.pid())
	base := rss(t, ext)
	cfg["MultiModule"] = fastMonitor(map[string]any{memMetric: memLevels(t, base, 30, 2048, 4096, true)})
	w.send(ctlQ, wrapped(cfg))
	a := w.alerts()
	leak(oem, 60)
	a.waitFor("OtherExternalModule", memMetric, "warn")

	cfg["MultiModule"] = fastMonitor(map[string]any{memMetric: memLevels(t, base, 1024, 2048, 4096, true)})
	w.send(ctlQ, wrapped(cfg))
	for i := 0; i < 100; i++ {
		oem.send(nil)
		oem.receive("external", nil)
		if _, ok := a.tryWaitFor(quiet/5, "OtherExternalModule", memMetric, "ok"); ok {
			break
		}
	}
	a.waitFor("OtherExternalModule", memMetric, "ok")
	w.cleanlyExit(d, true)
}
