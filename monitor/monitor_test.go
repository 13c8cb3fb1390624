package monitor

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// harness is a Monitor with recording callbacks and a test clock.
type harness struct {
	m     *Monitor
	now   time.Time
	calls []string // "alert <bucket> <window> <prev>-><level> @<s>" and "failsafe <task> @<s>", in order
	last  []Alert  // every alert, in order
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{now: t0}
	opts.Clock = func() time.Time { return h.now }
	opts.OnAlert = func(a Alert) {
		h.last = append(h.last, a)
		h.calls = append(h.calls, fmt.Sprintf("alert %s %s %s->%s @%g", a.Bucket, a.Window, a.Previous, a.Level, a.Time.Sub(t0).Seconds()))
	}
	opts.OnFailsafe = func(task string, a Alert) {
		h.calls = append(h.calls, fmt.Sprintf("failsafe %s @%g", task, a.Time.Sub(t0).Seconds()))
	}
	h.m = New(opts)
	return h
}

// run moves the clock through seconds from..to: each second it calls feed
// (if any), then evaluates every 5th second, as production does.
func (h *harness) run(from, to int, feed func(s float64)) {
	for s := from; s <= to; s++ {
		h.now = at(float64(s))
		if feed != nil {
			feed(float64(s))
		}
		if s%5 == 0 {
			h.m.Evaluate(h.now)
		}
	}
}

// expectCalls compares the recorded calls with want and clears them.
func (h *harness) expectCalls(t *testing.T, want ...string) {
	t.Helper()
	if !slices.Equal(h.calls, want) {
		t.Errorf("calls:\ngot  %s\nwant %s", strings.Join(h.calls, "\n     "), strings.Join(want, "\n     "))
	}
	h.calls = nil
}

func TestAlertsOnLevelChangeOnly(t *testing.T) {
	h := newHarness(t, Options{})
	// CPU at 1.5 cores (warn) for two minutes, then 0.5.
	h.run(0, 119, func(s float64) { h.m.Record("A", MetricCPU, at(s), 1.5) })
	h.expectCalls(t, "alert A:local.cpu.one_core one_minute ok->warn @30")
	// The one-minute mean is (1.5·54 + 0.5·6)/60 = 1.4 at 125 s: not above
	// 1.4, so ok. The five-minute window first reports at 150 s, at ok:
	// no alert.
	h.run(120, 400, func(s float64) { h.m.Record("A", MetricCPU, at(s), 0.5) })
	h.expectCalls(t, "alert A:local.cpu.one_core one_minute warn->ok @125")
	want := map[string]string{"local.cpu.one_core/one_minute": "ok", "local.cpu.one_core/five_minutes": "ok"}
	if got := h.m.Levels("A"); !reflect.DeepEqual(got, want) {
		t.Errorf("Levels: got %v, want %v", got, want)
	}
}

func TestAlertsPerWindowAndBucket(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 200, func(s float64) {
		h.m.Record("A", MetricFDs, at(s), 120) // warn
		h.m.Record("B", MetricFDs, at(s), 160) // severe
		h.m.Record("B", MetricThreads, at(s), 10)
	})
	h.expectCalls(t,
		"alert A:local.handles.fh.count one_minute ok->warn @30",
		"alert B:local.handles.fh.count one_minute ok->severe @30",
		"alert A:local.handles.fh.count five_minutes ok->warn @150",
		"alert B:local.handles.fh.count five_minutes ok->severe @150",
	)
	a := h.last[0]
	want := Alert{
		Task: "A", Check: CheckProcess, Bucket: "A:local.handles.fh.count", Metric: MetricFDs,
		Window: "one_minute", WindowWidth: time.Minute, Value: 120, Threshold: 100,
		Level: LevelWarn, Previous: LevelOK, Time: at(30),
		Summary: "one_minute: A:local.handles.fh.count: 120 (100) is warn",
	}
	if a != want {
		t.Errorf("first alert:\ngot  %+v\nwant %+v", a, want)
	}
}

func TestLevelWalkThroughEveryLevel(t *testing.T) {
	h := newHarness(t, Options{Windows: []Window{{"w", 10 * time.Second}}})
	steps := []struct {
		v    float64
		want string
	}{{0.12, "warn"}, {0.2, "severe"}, {0.12, "warn"}, {0.05, "ok"}}
	s := 0
	var got []string
	for _, st := range steps {
		// Long enough for a 10 s gauge to settle on the new value.
		h.run(s, s+19, func(x float64) { h.m.Record("A", MetricMemory, at(x), st.v) })
		s += 20
		got = append(got, h.m.Levels("A")["local.memory.vss_of_box_physical/w"])
	}
	want := []string{"warn", "severe", "warn", "ok"}
	if !slices.Equal(got, want) {
		t.Errorf("levels: got %v, want %v", got, want)
	}
	var changes []string
	for _, a := range h.last {
		changes = append(changes, a.Previous+"->"+a.Level)
	}
	if w := []string{"ok->warn", "warn->severe", "severe->warn", "warn->ok"}; !slices.Equal(changes, w) {
		t.Errorf("alerts: got %v, want %v", changes, w)
	}
}

func TestFailsafe(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 40, func(s float64) {
		h.m.Record("Leaky", MetricMemory, at(s), 0.5) // failsafe (can failsafe)
		h.m.Record("Leaky", MetricCPU, at(s), 2.5)    // failsafe too: still only one failsafe
		h.m.Record("main", MetricMemory, at(s), 0.5)  // the daemon: alert only
		h.m.Record("q1", MetricQueueFullness, at(s), 0.99)
	})
	// Every change of the round is alerted, Leaky's memory too; the
	// failsafe (on the first bucket that called for it) comes last.
	h.expectCalls(t,
		"alert Leaky:local.memory.vss_of_box_physical one_minute ok->failsafe @30",
		"alert main:local.memory.vss_of_box_physical one_minute ok->failsafe @30",
		"alert q1:local.queue.bytes_of_max one_minute ok->failsafe @30",
		"failsafe Leaky @30",
		"alert Leaky:local.cpu.one_core one_minute ok->failsafe @30",
	)
	if h.last[0].Failsafed || h.last[1].Failsafed || h.last[2].Failsafed || !h.last[3].Failsafed {
		t.Errorf("Failsafed flags: got %v %v %v %v, want false false false true", h.last[0].Failsafed, h.last[1].Failsafed, h.last[2].Failsafed, h.last[3].Failsafed)
	}
	// Leaky's buckets were cleared at 30 s; its samples since then (31..40)
	// are too young to give a value, so nothing fires again.
	for metric, e := range h.m.tasks["Leaky"] {
		if got := e.b.Len(); got != 10 {
			t.Errorf("Leaky:%s after the failsafe: got %d points, want 10 (31..40 s)", metric, got)
		}
	}
	if got := h.m.Levels("Leaky"); len(got) != 0 {
		t.Errorf("Leaky's levels after failsafe: got %v, want none", got)
	}
	if got := h.m.Levels("main")["local.memory.vss_of_box_physical/one_minute"]; got != LevelFailsafe {
		t.Errorf("main's memory level: got %q, want failsafe (alerted, never failsafed)", got)
	}
}

func TestFailsafeClearsBucketsAtOnce(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 30, func(s float64) {
		h.m.Record("Leaky", MetricMemory, at(s), 0.5)
		h.m.Record("Leaky", MetricFDs, at(s), 5)
		h.m.Record("Other", MetricFDs, at(s), 5)
	})
	h.expectCalls(t,
		"failsafe Leaky @30",
		"alert Leaky:local.memory.vss_of_box_physical one_minute ok->failsafe @30",
	)
	if got, want := h.m.Buckets(), []string{"Other:local.handles.fh.count"}; !slices.Equal(got, want) {
		t.Errorf("buckets after failsafe: got %v, want %v", got, want)
	}
}

func TestMayFailsafe(t *testing.T) {
	h := newHarness(t, Options{MayFailsafe: func(task string) bool { return task != "Precious" }})
	h.run(0, 30, func(s float64) {
		h.m.Record("Precious", MetricCPU, at(s), 3)
		h.m.Record("main", MetricCPU, at(s), 3) // a custom MayFailsafe decides for main too
	})
	h.expectCalls(t,
		"alert Precious:local.cpu.one_core one_minute ok->failsafe @30",
		"failsafe main @30",
		"alert main:local.cpu.one_core one_minute ok->failsafe @30",
	)
}

// TestCrashLoopFailsafes: an external restarted every 2 s trips
// local.admin.start.external (0.5 starts/s > 0.2) and is failsafed once.
func TestCrashLoopFailsafes(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 60, func(s float64) {
		if int(s)%2 == 0 {
			h.m.Count("Crashy", MetricStartExternal)
		}
	})
	// At 30 s: 16 starts in the last minute, 16/60 = 0.267/s.
	h.expectCalls(t,
		"failsafe Crashy @30",
		"alert Crashy:local.admin.start.external one_minute ok->failsafe @30",
	)
	if a := h.last[0]; a.Check != CheckAdmin || !near(a.Value, 16.0/60) || a.Threshold != 0.2 {
		t.Errorf("alert: got check %q value %v threshold %v, want admin 0.2667 0.2", a.Check, a.Value, a.Threshold)
	}
}

// TestFailsafeKeepsTheCauseAlert: an external that cannot load its task
// restarts every 2 s and fails to load each time. The start.external
// bucket (sorted first) failsafes the task; the load failures that say
// why are alerted in the same round, before the failsafe, not cleared
// unseen with the task's buckets.
func TestFailsafeKeepsTheCauseAlert(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 30, func(s float64) {
		if int(s)%2 == 0 {
			h.m.Count("DoesNotCompile", MetricStartExternal)
			h.m.Count("DoesNotCompile", MetricCompileFailureExternal)
		}
	})
	h.expectCalls(t,
		"alert DoesNotCompile:local.admin.task_compile_failure.external one_minute ok->severe @30",
		"failsafe DoesNotCompile @30",
		"alert DoesNotCompile:local.admin.start.external one_minute ok->failsafe @30",
	)
	if len(h.last) != 2 || h.last[0].Failsafed || !h.last[1].Failsafed {
		t.Errorf("alerts: got %+v, want the load failures' (not failsafed) then the failsafe", h.last)
	}
	if got := h.m.Buckets(); len(got) != 0 {
		t.Errorf("buckets after the failsafe: got %v, want none", got)
	}
}

// TestFailsafeEvaluatesTheYoungCause: the load failures began a few
// seconds after the starts, so their bucket gives no value yet in the
// round the starts failsafe the task; it is evaluated anyway (over the
// narrowest window) before it is cleared, and its alert comes first.
func TestFailsafeEvaluatesTheYoungCause(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 30, func(s float64) {
		if int(s)%2 == 0 {
			h.m.Count("DoesNotCompile", MetricStartExternal)
			if s >= 4 {
				h.m.Count("DoesNotCompile", MetricCompileFailureExternal)
			}
		}
	})
	h.expectCalls(t,
		"alert DoesNotCompile:local.admin.task_compile_failure.external one_minute ok->severe @30",
		"failsafe DoesNotCompile @30",
		"alert DoesNotCompile:local.admin.start.external one_minute ok->failsafe @30",
	)
}

// TestSumBucketRecoversAndGoes: a burst of load failures raises severe and
// warn, then ok in each window; the bucket disappears once its points age
// out, closing the five-minute level with an ok of value 0.
func TestSumBucketRecoversAndGoes(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 400, func(s float64) {
		if s < 10 {
			h.m.Count("Broken", MetricCompileFailureInternal)
		}
	})
	h.expectCalls(t,
		"alert Broken:local.admin.task_compile_failure.internal one_minute ok->severe @30",   // 10/60
		"alert Broken:local.admin.task_compile_failure.internal one_minute severe->warn @65", // 4/60
		"alert Broken:local.admin.task_compile_failure.internal one_minute warn->ok @70",
		"alert Broken:local.admin.task_compile_failure.internal five_minutes ok->warn @150", // 10/300
		"alert Broken:local.admin.task_compile_failure.internal five_minutes warn->ok @310", // emptied
	)
	if got := h.m.Buckets(); len(got) != 0 {
		t.Errorf("buckets: got %v, want none", got)
	}
	if got := h.last[len(h.last)-1].Value; got != 0 {
		t.Errorf("closing alert value: got %v, want 0", got)
	}
}

// TestMessageCountsPerMinute: passed and emitted messages are cumulative
// totals; their value is messages per minute.
func TestMessageCountsPerMinute(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 30, func(s float64) {
		h.m.Record("Busy", MetricPassedMessages, at(s), 200*s) // 12000 a minute: warn
		h.m.Record("Busy", MetricEmitMessages, at(s), 400*s)   // 24000 a minute: severe
		h.m.Record("Calm", MetricPassedMessages, at(s), 100*s) // 6000 a minute: ok
	})
	h.expectCalls(t,
		"alert Busy:local.admin.emit_messages one_minute ok->severe @30",
		"alert Busy:local.admin.passed_messages one_minute ok->warn @30",
	)
	if a := h.last[1]; a.Check != CheckTasks || !near(a.Value, 12000) {
		t.Errorf("passed alert: got check %q value %v, want tasks 12000", a.Check, a.Value)
	}
}

func TestSetThresholdsLive(t *testing.T) {
	h := newHarness(t, Options{Windows: []Window{{"one_minute", time.Minute}}})
	feed := func(s float64) { h.m.Record("T", MetricCPU, at(s), 1.0) }
	h.run(0, 30, feed)
	h.expectCalls(t) // 1.0 core is ok by default

	h.m.SetThresholds(map[string]Threshold{MetricCPU: {Levels: []Level{{"warn", 0.5}}}})
	h.now = at(31)
	h.m.Evaluate(h.now) // no new sample needed
	h.expectCalls(t, "alert T:local.cpu.one_core one_minute ok->warn @31")

	h.m.SetThresholds(nil) // back to the defaults
	h.run(32, 35, feed)
	h.expectCalls(t, "alert T:local.cpu.one_core one_minute warn->ok @35")

	h.m.SetThresholds(map[string]Threshold{MetricCPU: {Levels: []Level{{"warn", 0.5}}}})
	h.run(36, 40, feed)
	h.m.SetThresholds(map[string]Threshold{MetricCPU: {}}) // alerts off: the open level closes
	h.run(41, 50, feed)
	h.expectCalls(t,
		"alert T:local.cpu.one_core one_minute ok->warn @40",
		"alert T:local.cpu.one_core one_minute warn->ok @45",
	)
	if got := h.m.Levels("T"); len(got) != 0 {
		t.Errorf("levels of a metric without thresholds: got %v, want none", got)
	}
	if got := h.m.Thresholds()[MetricCPU].Levels; len(got) != 0 {
		t.Errorf("Thresholds()[cpu]: got %v, want no levels", got)
	}
}

func TestThresholdsFromOptions(t *testing.T) {
	h := newHarness(t, Options{Thresholds: map[string]Threshold{"my.metric": {Levels: []Level{{"high", 10}}}}})
	h.run(0, 30, func(s float64) { h.m.Record("T", "my.metric", at(s), 11) })
	h.expectCalls(t, "alert T:my.metric one_minute ok->high @30")
	if got := h.last[0].Check; got != CheckCustom {
		t.Errorf("check of a custom metric: got %q, want %q", got, CheckCustom)
	}
	if got := h.m.Thresholds()[MetricCPU]; !reflect.DeepEqual(got, DefaultThresholds()[MetricCPU]) {
		t.Errorf("cpu threshold: got %+v, want the default", got)
	}
}

func TestClearTask(t *testing.T) {
	h := newHarness(t, Options{})
	h.run(0, 30, func(s float64) {
		h.m.Record("T", MetricFDs, at(s), 120)
		h.m.Record("U", MetricFDs, at(s), 1)
	})
	h.expectCalls(t, "alert T:local.handles.fh.count one_minute ok->warn @30")
	h.m.ClearTask("T")
	h.m.ClearTask("never-seen")
	h.run(31, 40, nil)
	h.expectCalls(t) // forgotten silently: no ok alert
	if got, want := h.m.Buckets(), []string{"U:local.handles.fh.count"}; !slices.Equal(got, want) {
		t.Errorf("buckets: got %v, want %v", got, want)
	}
	if got := h.m.Levels("T"); len(got) != 0 {
		t.Errorf("levels after ClearTask: got %v, want none", got)
	}
	// It starts afresh: the warn is raised again.
	h.run(41, 80, func(s float64) { h.m.Record("T", MetricFDs, at(s), 120) })
	h.expectCalls(t, "alert T:local.handles.fh.count one_minute ok->warn @75")
}

func TestRecordProcessAndBadSamples(t *testing.T) {
	h := newHarness(t, Options{})
	ps := ProcessSample{FDs: 1, Threads: 2, MemFractionOfBox: 0.01, CPUCores: 0.1, ReadBytesPerSec: 5, WriteBytesPerSec: 6}
	h.m.RecordProcess("P", t0, ps, false)
	want := []string{"P:local.handles.fh.count", "P:local.handles.tasks.count", "P:local.memory.vss_of_box_physical"}
	if got := h.m.Buckets(); !slices.Equal(got, want) {
		t.Errorf("buckets without rates: got %v, want %v", got, want)
	}
	h.m.RecordProcess("P", t0, ps, true)
	want = []string{"P:local.cpu.one_core", "P:local.handles.fh.count", "P:local.handles.tasks.count",
		"P:local.io.disk.read_bytes", "P:local.io.disk.write_bytes", "P:local.memory.vss_of_box_physical"}
	if got := h.m.Buckets(); !slices.Equal(got, want) {
		t.Errorf("buckets with rates: got %v, want %v", got, want)
	}
	h.m.Record("Q", MetricCPU, t0, math.NaN())
	h.m.Record("Q", MetricCPU, t0, math.Inf(1))
	if got := h.m.Buckets(); slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "Q:") }) {
		t.Errorf("NaN and Inf samples made a bucket: %v", got)
	}
}

func TestMetricKinds(t *testing.T) {
	tests := []struct {
		metric string
		want   MetricInfo
	}{
		{MetricCPU, MetricInfo{Gauge, CheckProcess, 1}},
		{MetricQueueFullness, MetricInfo{Gauge, CheckQueue, 1}},
		{MetricPassedMessages, MetricInfo{Counter, CheckTasks, 60}},
		{MetricStartExternal, MetricInfo{Sum, CheckAdmin, 1}},
		{"local.admin.something_new", MetricInfo{Sum, CheckAdmin, 1}},
		{"my.gauge", MetricInfo{Gauge, CheckCustom, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.metric, func(t *testing.T) {
			if got := infoFor(DefaultMetrics(), tt.metric); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("options override", func(t *testing.T) {
		h := newHarness(t, Options{Metrics: map[string]MetricInfo{"my.total": {Kind: Counter}}})
		h.m.Record("T", "my.total", t0, 1)
		if got := h.m.tasks["T"]["my.total"].info; got != (MetricInfo{Counter, CheckCustom, 1}) {
			t.Errorf("got %+v, want a counter, custom check, scale 1", got)
		}
	})
}

func TestCutoffCoversTheWidestWindow(t *testing.T) {
	m := New(Options{Windows: []Window{{"ten_minutes", 10 * time.Minute}}, Buckets: BucketOptions{CutoffAge: time.Minute}})
	if got := m.bucketOpts.CutoffAge; got != 10*time.Minute {
		t.Errorf("cutoff age: got %v, want 10m", got)
	}
}

// TestCallbacksMayUseTheMonitor: callbacks run without the lock held.
func TestCallbacksMayUseTheMonitor(t *testing.T) {
	var m *Monitor
	var seen map[string]string
	m = New(Options{
		OnAlert: func(a Alert) {
			seen = m.Levels(a.Task)
			m.ClearTask(a.Task)
		},
	})
	for s := 0.0; s <= 30; s++ {
		m.Record(DaemonTask, MetricFDs, at(s), 500) // failsafe level, but the daemon is never failsafed
	}
	m.Evaluate(at(30))
	if seen["local.handles.fh.count/one_minute"] != LevelFailsafe {
		t.Errorf("level seen from the callback: got %v, want failsafe", seen)
	}
}

// TestConcurrentUse: Record and Count from many goroutines while another
// evaluates (run with -race).
func TestConcurrentUse(t *testing.T) {
	m := New(Options{Clock: func() time.Time { return at(10) }})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			task := fmt.Sprintf("T%d", g)
			for s := range 500 {
				m.Record(task, MetricCPU, at(float64(s)/50), 0.1)
				m.Count(task, MetricMessageFailure)
			}
		})
	}
	for s := range 50 {
		m.Evaluate(at(float64(s) / 5))
		_ = m.Levels("T0")
	}
	wg.Wait()
	if got := len(m.Buckets()); got != 8 {
		t.Errorf("buckets: got %d, want 8", got)
	}
}
