// Package monitortask is the built-in MultiModule task, the daemon's
// monitor: every second it samples the daemon, every external process,
// every queue and every task (their counters, mailboxes and co-processes),
// evaluates the buckets against the thresholds of its config, raises
// alerts on level changes and failsafes the tasks that misbehave. The
// levels it evaluates are saved for `multimodule status`.
//
// The task is bound to the daemon that runs it, which it reaches only
// through the Daemon interface, so it is not registered in a namespace:
// the daemon offers it through a source of its own (New).
package monitortask

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/tasks/oobtask"
	"github.com/multimodule/multimodule/transit"
)

// Name is the MultiModule task's name and queue.
const Name = "MultiModule"

// Extra Go-side metrics of internal tasks (gauges).
const (
	MetricMailboxDepth   = "local.task.mailbox_depth"   // messages waiting in the task's in-memory mailbox
	MetricHandlerSeconds = "local.task.handler_seconds" // mean handler time per message since the last sample
)

// Daemon is what the monitor needs of the daemon that runs it.
type Daemon interface {
	// Counters are the admin counters of the tasks the daemon hosts
	// (and of what happens to its externals' processes).
	Counters() *host.Counters
	// Tasks describes the tasks the daemon hosts.
	Tasks() []host.TaskInfo
	// Externals returns the pid of every live external process, by task.
	Externals() map[string]int
	// QueueStats returns the queues of the bus: every one when all is
	// true, else only those holding messages.
	QueueStats(ctx context.Context, all bool) ([]transit.QueueStat, error)
	// Out writes an out-of-band record (channel: oob.Channel*).
	Out(channel, task, text string, details map[string]any)
	// Failsafe asks the daemon to stop a task until a human clears it,
	// the monitor having decided so; alert says why. It is called while
	// the monitor evaluates, on the task's goroutine: it must not wait
	// for the task to stop (the daemon does that on a goroutine of its
	// own, which it joins before it shuts its tasks down).
	Failsafe(name string, alert map[string]any)
	// Evaluated is called after every evaluation, once the levels are
	// saved.
	Evaluated()
}

// New returns the MultiModule task of the daemon d, whose state
// directory is st.
func New(d Daemon, st *store.Store, log *slog.Logger) *Task {
	return &Task{d: d, store: st, log: log, pid: os.Getpid()}
}

// monitorConfig is the MultiModule task's config.
type monitorConfig struct {
	sample, evaluate time.Duration
	windows          []monitor.Window
	buckets          monitor.BucketOptions
	thresholds       map[string]monitor.Threshold
}

func parseMonitorConfig(cfg map[string]any) (monitorConfig, error) {
	mc := monitorConfig{sample: time.Second, evaluate: 5 * time.Second, windows: monitor.DefaultWindows()}
	if d, ok := registry.IntervalOverride(cfg, "sample"); ok {
		mc.sample = d
	}
	if d, ok := registry.IntervalOverride(cfg, "evaluate"); ok {
		mc.evaluate = d
	}
	if w, ok := cfg["windows"]; ok && w != nil {
		wm, ok := w.(map[string]any)
		if !ok {
			return mc, fmt.Errorf("MultiModule config: windows must be a map of name to seconds, got %T", w)
		}
		mc.windows = nil
		for _, def := range monitor.DefaultWindows() {
			width := def.Width
			if v, ok := wm[def.Name]; ok {
				f, ok := message.Float(v)
				if !ok || f <= 0 {
					return mc, fmt.Errorf("MultiModule config: windows.%s must be a positive number of seconds, got %v", def.Name, v)
				}
				width = time.Duration(f * float64(time.Second))
			}
			mc.windows = append(mc.windows, monitor.Window{Name: def.Name, Width: width})
		}
	}
	if b, ok := cfg["buckets"]; ok && b != nil {
		bm, ok := b.(map[string]any)
		if !ok {
			return mc, fmt.Errorf("MultiModule config: buckets must be a map, got %T", b)
		}
		if v, ok := message.Float(bm["cutoff_age"]); ok {
			mc.buckets.CutoffAge = time.Duration(v * float64(time.Second))
		}
		if v, ok := message.Int(bm["min_points"]); ok {
			mc.buckets.MinPoints = int(v)
		}
		if v, ok := message.Float(bm["min_bucket_span"]); ok {
			mc.buckets.MinBucketSpan = v
		}
	}
	if t, ok := cfg["thresholds"]; ok && t != nil {
		tm, ok := t.(map[string]any)
		if !ok {
			return mc, fmt.Errorf("MultiModule config: thresholds must be a map, got %T", t)
		}
		th, err := monitor.ParseThresholds(tm)
		if err != nil {
			return mc, fmt.Errorf("MultiModule config: %w", err)
		}
		mc.thresholds = th
	}
	return mc, nil
}

// Task is the MultiModule task (its monitoring half; the task-management
// half is the daemon's supervisor of externals). Sampling and evaluation
// run as its recurring work, on its goroutine.
type Task struct {
	d       Daemon
	store   *store.Store
	log     *slog.Logger
	pid     int        // the daemon's
	mu      sync.Mutex // guards m (the failsafe control path reads it)
	m       *monitor.Monitor
	shape   string // windows+buckets the monitor was built with
	sampler *monitor.Sampler
	last    map[string]map[string]uint64 // previous counter values per task (under mu)
	marks   map[string]host.CounterMark  // where each task's counters stood (host.Counters.Moved; under mu)
	// lastEvent is when an admin event of task/metric was last counted:
	// until it is older than the cutoff, every sample records the events
	// since the previous one, zeros included, so that sum buckets have
	// points to average over and return to ok (under mu).
	lastEvent map[string]map[string]time.Time
	cutoff    time.Duration
	// The queues known (under mu): name → the round of samples it was
	// last listed in; rebuilt from a full list every queueListEvery.
	queues     map[string]int64
	queueRound int64
	queuesAt   time.Time
	// Quiet runs (under mu; see record): per bucket, the value that
	// repeats, and the times of the recent rounds of samples.
	quiet map[string]*[quietMetrics]quietRun
	times []time.Time
	// settled: per task, the time after which a round in which none of
	// its counters moved records nothing for it, so it is skipped
	// (under mu; see settledAfter).
	settled   map[string]time.Time
	everyTask bool // never skip a settled task (tests compare both ways)
	// statuses: the externals' saved statuses (monitor goroutine only;
	// see status).
	statuses map[string]cachedStatus
}

// The buckets whose quiet samples are skipped, per task or queue.
const (
	quietPassed = iota
	quietEmitted
	quietMailbox
	quietFullness
	quietMetrics
)

// quietRun is a run of samples of one bucket that change no evaluation.
type quietRun struct {
	v        float64
	first    time.Time // the bucket's first sample
	since    time.Time // when the run began; zero: at the first sample
	recorded time.Time // its last sample recorded; zero: none
}

// SetConfig applies the config: windows, buckets, thresholds, and the
// intervals of sampling and evaluation. Changed windows or bucket rules
// start the history anew; changed thresholds apply to it.
func (t *Task) SetConfig(tc *task.Context, cfg map[string]any) error {
	mc, err := parseMonitorConfig(cfg)
	if err != nil {
		return err
	}
	if err := t.apply(mc); err != nil {
		return err
	}
	tc.NamedRecur("sample", mc.sample, t.sample)
	tc.NamedRecur("evaluate", mc.evaluate, t.evaluate)
	return nil
}

// apply makes the monitor for mc, or gives the one there its thresholds.
func (t *Task) apply(mc monitorConfig) error {
	shape := fmt.Sprint(mc.windows, mc.buckets)
	t.mu.Lock()
	if t.m == nil || shape != t.shape {
		// Windows and bucket rules shape the history: start it anew.
		t.m = monitor.New(monitor.Options{
			Windows:    mc.windows,
			Buckets:    mc.buckets,
			Thresholds: mc.thresholds,
			OnAlert:    t.onAlert,
			OnFailsafe: func(name string, a monitor.Alert) { t.d.Failsafe(name, a.Message()) },
			MayFailsafe: func(name string) bool {
				return name != monitor.DaemonTask && name != Name && name != oobtask.Name
			},
			Logger: t.log,
		})
		t.shape = shape
		t.quiet, t.times, t.settled = nil, nil, nil // the history starts anew
		t.cutoff = 300 * time.Second
		for _, w := range mc.windows {
			t.cutoff = max(t.cutoff, w.Width)
		}
		if mc.buckets.CutoffAge > t.cutoff {
			t.cutoff = mc.buckets.CutoffAge
		}
	} else {
		t.m.SetThresholds(mc.thresholds)
	}
	t.mu.Unlock()
	if t.sampler == nil {
		s, err := monitor.NewSampler()
		if err != nil {
			return fmt.Errorf("MultiModule: %w", err)
		}
		t.sampler = s
	}
	return nil
}

// Message ignores the messages sent to the task: the monitor takes none.
func (t *Task) Message(tc *task.Context, m message.Message) error { return nil }

func (t *Task) monitor() *monitor.Monitor {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m
}

// ClearTask forgets a task's history (after failsafe and unfailsafe).
func (t *Task) ClearTask(name string) {
	if m := t.monitor(); m != nil {
		m.ClearTask(name)
	}
	t.mu.Lock()
	delete(t.last, name)
	delete(t.marks, name)
	delete(t.lastEvent, name)
	delete(t.quiet, name)
	delete(t.settled, name)
	t.mu.Unlock()
}

// round notes the time of a round of samples (for record); t.mu held.
func (t *Task) round(now time.Time) {
	t.times = append(t.times, now)
	if now.Sub(t.times[0]) > t.cutoff {
		i := 0
		for i < len(t.times) && now.Sub(t.times[i]) > t.cutoff {
			i++
		}
		t.times = append(t.times[:0], t.times[i:]...)
	}
}

// record records one sample of a counter bucket (running totals) or a
// gauge bucket, skipping the ones that change no evaluation, so that a
// thousand idle tasks and queues cost next to nothing: a run of samples
// of the same total (counter) or of zeros (gauge) is recorded for the
// cutoff age after it begins — until then the windows hold earlier
// values too — and skipped after that, when the windows hold nothing but
// the run: a counter's rate is 0 and a gauge's mean 0 either way (or
// there is no value at all, which alerts no more than 0). A run seen
// from the first sample on is skipped at once. When a different value
// comes, the skipped samples are recorded first, at the times of their
// rounds, so the bucket holds exactly what sampling every second gives.
// t.mu held; now is this round's time (the last of t.times).
func (t *Task) record(m *monitor.Monitor, name, metric string, idx int, now time.Time, v float64, counter bool) {
	if t.quiet == nil {
		t.quiet = map[string]*[quietMetrics]quietRun{}
	}
	qs := t.quiet[name]
	if qs == nil {
		qs = new([quietMetrics]quietRun)
		t.quiet[name] = qs
	}
	q := &qs[idx]
	seen := !q.first.IsZero()
	runs := counter || v == 0
	if seen && runs && v == q.v {
		if !q.since.IsZero() && now.Sub(q.since) <= t.cutoff {
			m.Record(name, metric, now, v)
			q.recorded = now
		}
		return
	}
	if !seen {
		q.first = now
		if runs {
			q.v = v
			return
		}
	} else {
		// The samples of the run that were skipped, oldest first.
		for _, ts := range t.times {
			if ts.After(q.recorded) && !ts.Before(q.first) && ts.Before(now) {
				m.Record(name, metric, ts, q.v)
			}
		}
	}
	m.Record(name, metric, now, v)
	q.v, q.since, q.recorded = v, now, now
}

// recordCounters records one round of every task's counters (task →
// metric → running total). A task none of whose counters moved since the
// previous round, and that records nothing while they stay still (past
// settledAfter), is skipped: a thousand idle tasks cost a comparison
// each. t.mu held; now is this round's time (t.round done).
func (t *Task) recordCounters(m *monitor.Monitor, now time.Time, counters map[string]map[string]uint64) {
	if t.last == nil {
		t.last = map[string]map[string]uint64{}
		t.lastEvent = map[string]map[string]time.Time{}
	}
	if t.settled == nil {
		t.settled = map[string]time.Time{}
	}
	// The tasks left out of counters did not move (host.Counters.Moved):
	// they record what the loop below would for a task that did not move.
	for name, until := range t.settled {
		if _, ok := counters[name]; !ok && t.last[name] != nil && !now.After(until) {
			t.recordStill(m, name, now)
		}
	}
	for name, cs := range counters {
		prev := t.last[name]
		if until, ok := t.settled[name]; ok && !t.everyTask && prev != nil && sameCounts(cs, prev) {
			// Nothing moved: record what the loop below would, the
			// runs still within the cutoff age — nothing at all once
			// the task has settled.
			if !now.After(until) {
				t.recordStill(m, name, now)
			}
			continue
		}
		if prev == nil {
			prev = map[string]uint64{}
			t.last[name] = prev
		}
		if n := cs[host.MetricHandlerNanos]; n > prev[host.MetricHandlerNanos] {
			if dp := cs[host.MetricPassedMessages] - prev[host.MetricPassedMessages]; dp > 0 {
				m.Record(name, MetricHandlerSeconds, now, float64(n-prev[host.MetricHandlerNanos])/1e9/float64(dp))
			}
		}
		for metric, v := range cs {
			switch metric {
			case host.MetricHandlerNanos:
			case host.MetricPassedMessages:
				t.record(m, name, metric, quietPassed, now, float64(v), true) // running totals (counter buckets)
			case host.MetricEmitMessages:
				t.record(m, name, metric, quietEmitted, now, float64(v), true)
			default:
				if strings.HasPrefix(metric, host.MetricHandlerBucketPrefix) {
					break // the /metrics histogram's buckets, not a monitor metric
				}
				le := t.lastEvent[name]
				if le == nil {
					le = map[string]time.Time{}
					t.lastEvent[name] = le
				}
				if v > prev[metric] {
					le[metric] = now
				}
				if seen, ok := le[metric]; ok && now.Sub(seen) <= t.cutoff {
					m.Record(name, metric, now, float64(v-min(v, prev[metric]))) // events since the last sample (sum buckets)
				}
			}
			prev[metric] = v
		}
		t.settled[name] = t.settledAfter(name)
	}
}

// recordStill records one round of a task none of whose counters moved
// since the previous round, exactly as the general loop of
// recordCounters would: the same total again for a run of totals within
// the cutoff age of its beginning (see record), and no events (0) for an
// admin metric within the cutoff age of its last event. t.mu held.
func (t *Task) recordStill(m *monitor.Monitor, name string, now time.Time) {
	if qs := t.quiet[name]; qs != nil {
		for idx, metric := range [...]string{quietPassed: host.MetricPassedMessages, quietEmitted: host.MetricEmitMessages} {
			if q := &qs[idx]; !q.since.IsZero() && now.Sub(q.since) <= t.cutoff {
				m.Record(name, metric, now, q.v)
				q.recorded = now
			}
		}
	}
	for metric, seen := range t.lastEvent[name] {
		if now.Sub(seen) <= t.cutoff {
			m.Record(name, metric, now, 0)
		}
	}
}

// settledAfter returns when the task's counters stop being recorded if
// they do not move: the end of the cutoff age after its last quiet run
// of totals began, or after its last admin event. t.mu held.
func (t *Task) settledAfter(name string) time.Time {
	var until time.Time
	if qs := t.quiet[name]; qs != nil {
		for _, i := range []int{quietPassed, quietEmitted} {
			if q := qs[i]; !q.since.IsZero() {
				until = later(until, q.since.Add(t.cutoff))
			}
		}
	}
	for _, seen := range t.lastEvent[name] {
		until = later(until, seen.Add(t.cutoff))
	}
	return until
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// sameCounts reports whether a task's counters hold the values of the
// previous round (the same metrics, none moved).
func sameCounts(cs, prev map[string]uint64) bool {
	if len(cs) != len(prev) {
		return false
	}
	for k, v := range cs {
		if p, ok := prev[k]; !ok || p != v {
			return false
		}
	}
	return true
}

// status returns the saved status of an external task, read again only
// when its file changed (store.LoadStatusIfChanged). Monitor goroutine
// only.
func (t *Task) status(name string) *store.Status {
	if t.statuses == nil {
		t.statuses = map[string]cachedStatus{}
	}
	c := t.statuses[name]
	st, stamp, changed, _ := t.store.LoadStatusIfChanged(name, c.stamp)
	if changed {
		c = cachedStatus{st: st, stamp: stamp}
		t.statuses[name] = c
	}
	return c.st
}

// cachedStatus is the status of an external task as the monitor last
// read it.
type cachedStatus struct {
	st    *store.Status
	stamp store.StatusStamp
}

// sample records one round of samples (every second).
func (t *Task) sample(tc *task.Context) {
	m := t.monitor()
	if m == nil {
		return
	}
	now := time.Now()
	d := t.d
	// The daemon and every external process.
	if s, rates, err := t.sampler.Sample(t.pid, now); err == nil {
		m.RecordProcess(monitor.DaemonTask, now, s, rates)
	}
	// Only the tasks whose counters moved, and the externals (whose own
	// process counts their messages): a thousand idle tasks cost a sum
	// each (host.Counters.Moved); recordCounters records the others as
	// still.
	t.mu.Lock()
	if t.marks == nil || t.everyTask {
		t.marks = map[string]host.CounterMark{}
	}
	counters := d.Counters().Moved(t.marks)
	t.mu.Unlock()
	if counters == nil {
		counters = map[string]map[string]uint64{}
	}
	for name, p := range d.Externals() {
		if fs, _ := t.store.ReadFailsafe(name); fs != nil {
			continue
		}
		st := t.status(name)
		if st != nil && st.PID != p {
			st = nil
		}
		if s, rates, err := t.sampler.Sample(p, now); err == nil {
			if st != nil && st.CoPID > 0 {
				// An external exec task: the process and its co-process
				// together are the task's usage.
				if c, crates, err := t.sampler.Sample(st.CoPID, now); err == nil {
					s = addSamples(s, c)
					rates = rates && crates
				}
			}
			m.RecordProcess(name, now, s, rates)
		}
		if st != nil {
			// The external counts its own messages; the daemon counts
			// what happens to the process (starts, stops).
			c := counters[name]
			if c == nil {
				c = d.Counters().Task(name)
				counters[name] = c
			}
			for k, v := range st.Counters {
				c[k] += v
			}
		}
	}
	// Every task's counters.
	t.mu.Lock()
	defer t.mu.Unlock()
	t.round(now)
	t.recordCounters(m, now, counters)
	for _, ti := range d.Tasks() {
		t.record(m, ti.Name, MetricMailboxDepth, quietMailbox, now, float64(ti.Mailbox), false)
		if ti.CoPID > 0 {
			// An exec task's co-process is the task's process.
			if s, rates, err := t.sampler.Sample(ti.CoPID, now); err == nil {
				m.RecordProcess(ti.Name, now, s, rates)
			}
		}
	}
	// Every queue's fullness. Listing the bus' empty queues costs a
	// request that names every queue's consumer, so it is done every
	// queueListEvery only; in between, the queues holding messages are
	// asked for, and every other queue known is recorded empty.
	ctx, cancel := context.WithTimeout(tc.Context(), 2*time.Second)
	defer cancel()
	listAll := now.Sub(t.queuesAt) >= queueListEvery
	stats, err := d.QueueStats(ctx, listAll)
	if err == nil {
		if t.queues == nil || listAll {
			t.queues = make(map[string]int64, len(stats)) // name → sample it was last seen in
			t.queuesAt = now
		}
		t.queueRound++
		for _, q := range stats {
			full := 0.0
			if q.Capacity.Msgs > 0 {
				full = float64(q.Msgs) / float64(q.Capacity.Msgs)
			}
			if q.Capacity.Bytes > 0 {
				full = max(full, float64(q.Bytes)/float64(q.Capacity.Bytes))
			}
			t.record(m, q.Name, monitor.MetricQueueFullness, quietFullness, now, full, false)
			t.queues[q.Name] = t.queueRound
		}
		for name, round := range t.queues {
			if round != t.queueRound {
				t.record(m, name, monitor.MetricQueueFullness, quietFullness, now, 0, false)
			}
		}
	}
}

// queueListEvery is how often the monitor lists every queue of the bus,
// empty ones included (see sample).
const queueListEvery = 30 * time.Second

// evaluate evaluates every bucket (every 5 seconds) and saves
// the current levels for `multimodule status`.
func (t *Task) evaluate(tc *task.Context) {
	m := t.monitor()
	if m == nil {
		return
	}
	m.Evaluate(time.Now())
	levels := store.Levels{}
	for _, b := range m.Buckets() {
		name, _, _ := cutBucket(b)
		if _, done := levels[name]; done {
			continue
		}
		lv := map[string]string{}
		for k, v := range m.Levels(name) {
			if v != "" && v != "ok" {
				lv[k] = v
			}
		}
		if len(lv) > 0 {
			levels[name] = lv
		}
	}
	if err := t.store.SaveLevels(levels); err != nil {
		t.log.Error("monitor: save levels", "error", err)
	}
	t.d.Evaluated()
}

// Levels returns the current level of every bucket, by task (or queue)
// and metric, "ok" or "" included; nil before the task's first config.
func (t *Task) Levels() store.Levels {
	m := t.monitor()
	if m == nil {
		return nil
	}
	all := store.Levels{}
	for _, b := range m.Buckets() {
		name, _, _ := cutBucket(b)
		if _, done := all[name]; !done {
			all[name] = m.Levels(name)
		}
	}
	return all
}

// onAlert writes an alert to the alert channel, carrying the whole alert
// as details.
func (t *Task) onAlert(a monitor.Alert) {
	t.d.Out(oob.ChannelAlert, a.Task, a.Summary, a.Message())
}

// cutBucket splits a bucket name "<task or queue>:<metric>".
func cutBucket(b string) (name, metric string, ok bool) {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ':' {
			return b[:i], b[i+1:], true
		}
	}
	return b, "", false
}

// addSamples adds the usage of two processes that together are one task.
func addSamples(a, b monitor.ProcessSample) monitor.ProcessSample {
	return monitor.ProcessSample{
		FDs:              a.FDs + b.FDs,
		Threads:          a.Threads + b.Threads,
		MemFractionOfBox: a.MemFractionOfBox + b.MemFractionOfBox,
		ReadBytesPerSec:  a.ReadBytesPerSec + b.ReadBytesPerSec,
		WriteBytesPerSec: a.WriteBytesPerSec + b.WriteBytesPerSec,
		CPUCores:         a.CPUCores + b.CPUCores,
	}
}

var _ task.Configurer = (*Task)(nil)
