// Package monitor is MultiModule's monitoring library: it keeps
// samples in buckets, evaluates them over windows against thresholds,
// raises deduplicated alerts on level changes, and decides when a task
// must be failsafed. It also samples processes from /proc (Sampler).
//
// It does no I/O of its own beyond /proc and runs no goroutines: the
// built-in MultiModule task feeds it and drives it.
//
//  1. Every second, for the daemon (task "main") and every external
//     process: Sampler.Sample, then Monitor.RecordProcess. For every queue:
//     Record(queue, MetricQueueFullness, …). For every task: the cumulative
//     totals MetricPassedMessages and MetricEmitMessages.
//  2. On every admin event (a handler failure, a failed load, a start, a
//     stop): Monitor.Count(task, metric).
//  3. Every 5 seconds: Monitor.Evaluate. Each bucket is evaluated over each
//     window (one_minute, five_minutes); a level change calls OnAlert; a
//     "failsafe" level on a metric that can failsafe calls OnFailsafe once,
//     after every other alert of the round, and the task's buckets are
//     cleared.
//  4. When the MultiModule task's config changes: ParseThresholds on its
//     `thresholds`, then Monitor.SetThresholds.
//  5. When a task is unfailsafed: Monitor.ClearTask, so it starts afresh.
//
// A bucket is named "<task>:<metric>"; how its points become a value is
// the metric's Kind (see DefaultMetrics). docs/monitoring.md describes
// the metrics, the bucket math, the defaults and the alert fields for
// operators.
package monitor

import (
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// DaemonTask is the name under which the daemon's own process is
// monitored. By default it is never failsafed (the daemon itself
// is never killed).
const DaemonTask = "main"

// Window is one evaluation window.
type Window struct {
	Name  string        // e.g. "one_minute"; goes into alerts
	Width time.Duration // how far back the window reaches
}

// DefaultWindows returns the default windows: one_minute (60 s) and
// five_minutes (300 s).
func DefaultWindows() []Window {
	return []Window{{"one_minute", time.Minute}, {"five_minutes", 5 * time.Minute}}
}

// Options configure a Monitor. The zero value gives the documented
// defaults (docs/monitoring.md).
type Options struct {
	// Windows to evaluate every bucket over, in this order; nil means
	// DefaultWindows.
	Windows []Window
	// Buckets gives CutoffAge, MinPoints and MinBucketSpan for every
	// bucket (Kind is ignored: it comes from the metric). Zero fields take
	// the defaults; CutoffAge is raised to the widest window.
	Buckets BucketOptions
	// Metrics says how metrics are kept, merged over DefaultMetrics.
	Metrics map[string]MetricInfo
	// Thresholds are overrides merged over DefaultThresholds, as
	// SetThresholds does.
	Thresholds map[string]Threshold
	// Clock gives the time for Count; nil means time.Now.
	Clock func() time.Time
	// OnAlert is called for every alert, in order, from Evaluate.
	OnAlert func(Alert)
	// OnFailsafe is called from Evaluate, once, when task reaches a
	// "failsafe" level on a metric that can failsafe; a is that alert
	// (with Failsafed set), which OnAlert also receives right after. The
	// caller writes the failsafe file and stops the task.
	OnFailsafe func(task string, a Alert)
	// MayFailsafe reports whether task may be failsafed at all; when it
	// says no, a "failsafe" level only alerts. nil means every task except
	// DaemonTask.
	MayFailsafe func(task string) bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// entry is one bucket and its alert levels, one per window ("" while the
// window has not given a level yet, which counts as "ok").
type entry struct {
	task, metric, name string
	info               MetricInfo
	b                  *Bucket
	levels             []string
}

// Monitor keeps the buckets of every task and queue and evaluates them.
// It is safe for concurrent use: Record and Count may be called from any
// goroutine while another calls Evaluate. Callbacks run from Evaluate
// without Monitor's lock held, so they may call Record, Count, Levels,
// SetThresholds and ClearTask, but not Evaluate.
type Monitor struct {
	windows     []Window
	bucketOpts  BucketOptions
	metrics     map[string]MetricInfo
	clock       func() time.Time
	onAlert     func(Alert)
	onFailsafe  func(string, Alert)
	mayFailsafe func(string) bool
	log         *slog.Logger
	defaults    map[string]Threshold

	evalMu sync.Mutex // one Evaluate at a time, callbacks included, so alerts stay in order

	mu         sync.Mutex
	thresholds map[string]Threshold
	tasks      map[string]map[string]*entry // task → metric → bucket
	order      []*entry                     // every entry, sorted by name; rebuilt when dirty
	dirty      bool
}

// New returns a Monitor with no buckets.
func New(opts Options) *Monitor {
	m := &Monitor{
		windows:     slices.Clone(opts.Windows),
		bucketOpts:  opts.Buckets.withDefaults(),
		metrics:     DefaultMetrics(),
		clock:       opts.Clock,
		onAlert:     opts.OnAlert,
		onFailsafe:  opts.OnFailsafe,
		mayFailsafe: opts.MayFailsafe,
		log:         opts.Logger,
		defaults:    DefaultThresholds(),
		tasks:       map[string]map[string]*entry{},
	}
	if m.windows == nil {
		m.windows = DefaultWindows()
	}
	for _, w := range m.windows {
		m.bucketOpts.CutoffAge = max(m.bucketOpts.CutoffAge, w.Width)
	}
	for k, mi := range opts.Metrics {
		m.metrics[k] = mi
	}
	if m.clock == nil {
		m.clock = time.Now
	}
	if m.mayFailsafe == nil {
		m.mayFailsafe = func(task string) bool { return task != DaemonTask }
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.thresholds = mergeThresholds(m.defaults, opts.Thresholds)
	return m
}

// Record adds the sample v at time t to the bucket "<task>:<metric>",
// creating it when needed. For a Counter metric v is the running total;
// for a Sum metric, an amount (1 per event); for a Gauge, the reading.
// A value that is NaN or infinite is dropped.
func (m *Monitor) Record(task, metric string, t time.Time, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		m.log.Debug("monitor: dropped a sample that is not a finite number", "task", task, "metric", metric, "value", v)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	byMetric := m.tasks[task]
	if byMetric == nil {
		byMetric = map[string]*entry{}
		m.tasks[task] = byMetric
	}
	e := byMetric[metric]
	if e == nil {
		info := infoFor(m.metrics, metric)
		bo := m.bucketOpts
		bo.Kind = info.Kind
		e = &entry{
			task:   task,
			metric: metric,
			name:   task + ":" + metric,
			info:   info,
			b:      NewBucket(bo),
			levels: make([]string, len(m.windows)),
		}
		byMetric[metric] = e
		m.dirty = true
	}
	e.b.Add(t, v)
}

// Count records one event of an admin metric (a Sum bucket) now, by the
// Monitor's clock.
func (m *Monitor) Count(task, metric string) {
	m.Record(task, metric, m.clock(), 1)
}

// RecordProcess records a process sample of task at time t: file handles,
// threads and memory always; CPU and disk rates only when rates is true
// (Sampler.Sample's second result).
func (m *Monitor) RecordProcess(task string, t time.Time, s ProcessSample, rates bool) {
	m.Record(task, MetricFDs, t, s.FDs)
	m.Record(task, MetricThreads, t, s.Threads)
	m.Record(task, MetricMemory, t, s.MemFractionOfBox)
	if rates {
		m.Record(task, MetricCPU, t, s.CPUCores)
		m.Record(task, MetricDiskRead, t, s.ReadBytesPerSec)
		m.Record(task, MetricDiskWrite, t, s.WriteBytesPerSec)
	}
}

// SetThresholds replaces the threshold overrides: from now on every metric
// in overrides uses its Threshold there, every other metric its default.
// The next Evaluate applies them (a level may change, and be alerted,
// without any new sample).
func (m *Monitor) SetThresholds(overrides map[string]Threshold) {
	th := mergeThresholds(m.defaults, overrides)
	m.mu.Lock()
	m.thresholds = th
	m.mu.Unlock()
}

// Thresholds returns a copy of the thresholds in force (defaults merged
// with overrides).
func (m *Monitor) Thresholds() map[string]Threshold {
	m.mu.Lock()
	defer m.mu.Unlock()
	return mergeThresholds(m.thresholds, nil)
}

// ClearTask forgets every bucket of task and their alert levels, silently
// (no "ok" alert). Call it when a task is unfailsafed so that it starts
// with a clean history. Evaluate does it itself when it failsafes a task.
func (m *Monitor) ClearTask(task string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tasks[task]; ok {
		delete(m.tasks, task)
		m.dirty = true
	}
}

// Levels returns task's current alert levels, keyed "<metric>/<window>",
// e.g. "local.cpu.one_core/one_minute" → "warn". Only metrics with
// thresholds that have been evaluated at least once appear.
func (m *Monitor) Levels(task string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for metric, e := range m.tasks[task] {
		for i, l := range e.levels {
			if l != "" {
				out[metric+"/"+m.windows[i].Name] = l
			}
		}
	}
	return out
}

// Buckets returns the names of the buckets that exist, sorted.
func (m *Monitor) Buckets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sortLocked()
	names := make([]string, len(m.order))
	for i, e := range m.order {
		names[i] = e.name
	}
	return names
}

// sortLocked rebuilds m.order when buckets came or went.
func (m *Monitor) sortLocked() {
	if !m.dirty {
		return
	}
	m.order = m.order[:0]
	for _, byMetric := range m.tasks {
		for _, e := range byMetric {
			m.order = append(m.order, e)
		}
	}
	slices.SortFunc(m.order, func(a, b *entry) int { return strings.Compare(a.name, b.name) })
	m.dirty = false
}

// event is one thing Evaluate reports once it has let go of the lock.
type event struct {
	alert    Alert
	failsafe bool
}

// Evaluate drops points older than the cutoff age at now, removes empty
// buckets, and evaluates every bucket over every window against the
// thresholds. For each bucket and window it raises an alert only when the
// level differs from the last one raised (starting from "ok"), so a level
// that holds is not repeated and a recovery gives one "ok" alert. A bucket
// that empties while at a level other than "ok" gives its "ok" alert (with
// value 0) as it goes. When a task reaches the level named "failsafe" on a
// metric whose Threshold can failsafe (and MayFailsafe allows it), OnFailsafe
// is called once for that task and all of its buckets are cleared. Every
// other level change found in the same round, of that task too, is
// alerted first: the failsafe comes last, so the alert that names the
// cause (a burst of load failures behind a crash loop, say) is never lost
// to the failsafe that clears its bucket; a bucket of that task that gives
// no value yet in any window is evaluated anyway, this last time, over the
// narrowest. Otherwise a window that gives no value yet (too few points,
// too short a span) keeps its last level.
//
// Evaluate calls are serialized; callbacks run in order, after the
// Monitor's lock is released. Production calls it every 5 seconds.
func (m *Monitor) Evaluate(now time.Time) {
	m.evalMu.Lock()
	defer m.evalMu.Unlock()
	events := m.evaluateLocked(now)
	for _, ev := range events {
		if ev.failsafe && m.onFailsafe != nil {
			m.onFailsafe(ev.alert.Task, ev.alert)
		}
		if m.onAlert != nil {
			m.onAlert(ev.alert)
		}
	}
}

// evaluateLocked does Evaluate's work under m.mu and returns what to
// report.
func (m *Monitor) evaluateLocked(now time.Time) []event {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sortLocked()
	var events, failsafes []event
	var failsafed map[string]bool
	for _, e := range m.order {
		th, hasTh := m.thresholds[e.metric]
		hasTh = hasTh && len(th.Levels) > 0
		if e.b.Prune(now) {
			// The bucket goes; close any level it left open.
			for i, w := range m.windows {
				prev := e.levels[i]
				if prev == "" || prev == LevelOK {
					continue
				}
				level, thr := LevelOK, 0.0
				if hasTh {
					level, thr = th.LevelOf(0)
				}
				if level != prev {
					events = append(events, event{alert: m.alert(e, w, now, 0, level, thr, prev)})
				}
			}
			delete(m.tasks[e.task], e.metric)
			if len(m.tasks[e.task]) == 0 {
				delete(m.tasks, e.task)
			}
			m.dirty = true
			continue
		}
		for i, w := range m.windows {
			v, ok := e.b.Eval(now, w.Width)
			if !ok {
				continue
			}
			a, changed := m.levelChange(e, i, th, hasTh, now, v)
			if !changed {
				continue
			}
			level := a.Level
			if level == LevelFailsafe && th.CanFailsafe && !failsafed[e.task] && m.mayFailsafe(e.task) {
				// Reported after every other change of this round.
				a.Failsafed = true
				failsafes = append(failsafes, event{alert: a, failsafe: true})
				if failsafed == nil {
					failsafed = map[string]bool{}
				}
				failsafed[e.task] = true
				continue
			}
			events = append(events, event{alert: a})
		}
	}
	// The buckets of a task being failsafed are cleared. One too young
	// to give a value in any window is evaluated anyway over the
	// narrowest, this last time, so that a cause that began a moment
	// after the failsafe's (the load failure after the start it
	// followed) is still alerted. A Sum's value is over the whole
	// window, never inflated by a short span.
	if len(failsafed) > 0 {
		narrowest := 0
		for i, w := range m.windows {
			if w.Width < m.windows[narrowest].Width {
				narrowest = i
			}
		}
		for _, task := range slices.Sorted(maps.Keys(failsafed)) {
			for _, metric := range slices.Sorted(maps.Keys(m.tasks[task])) {
				e := m.tasks[task][metric]
				if !e.young(now, m.windows) {
					continue
				}
				th, hasTh := m.thresholds[metric]
				hasTh = hasTh && len(th.Levels) > 0
				if v, ok := e.b.eval(now, m.windows[narrowest].Width, true); ok {
					if a, changed := m.levelChange(e, narrowest, th, hasTh, now, v); changed {
						events = append(events, event{alert: a})
					}
				}
			}
		}
	}
	events = append(events, failsafes...)
	for task := range failsafed {
		m.log.Warn("monitor: failsafing task", "task", task)
		delete(m.tasks, task)
		m.dirty = true
	}
	return events
}

// young reports whether e gives no value yet over any of windows.
func (e *entry) young(now time.Time, windows []Window) bool {
	for _, w := range windows {
		if _, ok := e.b.Eval(now, w.Width); ok {
			return false
		}
	}
	return true
}

// levelChange records the level of entry e over window i for the value
// v (before scaling) and returns the alert when the level changed.
func (m *Monitor) levelChange(e *entry, i int, th Threshold, hasTh bool, now time.Time, v float64) (Alert, bool) {
	v *= e.info.Scale
	prev := e.levels[i]
	if prev == "" {
		prev = LevelOK
	}
	level, thr := LevelOK, 0.0
	if hasTh {
		level, thr = th.LevelOf(v)
	}
	if !hasTh && prev == LevelOK {
		e.levels[i] = "" // never alerted, and nothing to show
		return Alert{}, false
	}
	e.levels[i] = level
	if level == prev {
		return Alert{}, false
	}
	return m.alert(e, m.windows[i], now, v, level, thr, prev), true
}

// alert builds the Alert for entry e over window w.
func (m *Monitor) alert(e *entry, w Window, now time.Time, v float64, level string, thr float64, prev string) Alert {
	a := Alert{
		Task:        e.task,
		Check:       e.info.Check,
		Bucket:      e.name,
		Metric:      e.metric,
		Window:      w.Name,
		WindowWidth: w.Width,
		Value:       v,
		Threshold:   thr,
		Level:       level,
		Previous:    prev,
		Time:        now,
	}
	a.Summary = a.summary()
	return a
}
