package host

import (
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Admin metric names. Each is counted per task.
const (
	MetricTaskCompileFailureInternal = "local.admin.task_compile_failure.internal"
	MetricTaskCompileFailureExternal = "local.admin.task_compile_failure.external"
	MetricTaskMessageFailure         = "local.admin.task_message_failure"
	MetricPassedMessages             = "local.admin.passed_messages"
	MetricEmitMessages               = "local.admin.emit_messages"
	MetricStartInternal              = "local.admin.start.internal"
	MetricStartExternal              = "local.admin.start.external"
	MetricStartCoprocess             = "local.admin.start.coprocess" // restarts of a task's co-process (exec tasks)
	MetricStopInternal               = "local.admin.stop.internal"
	MetricStopRequestExternal        = "local.admin.stop_request.external"
	MetricStartRequestInternal       = "local.admin.start_request.internal"
	MetricStartRequestExternal       = "local.admin.start_request.external"
	MetricHandlerNanos               = "local.task.handler_nanos"
)

// HandlerBuckets are the upper bounds of the per-task handler latency
// histogram: a message whose handling took at most HandlerBuckets[i] (and
// more than the bound before) is counted in the counter named
// HandlerBucketMetrics[i]; one slower than the last bound in
// MetricHandlerOverflow. The counts are per bucket, not cumulative.
var HandlerBuckets = [...]time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 10 * time.Second,
}

// MetricHandlerBucketPrefix starts the name of every handler latency
// bucket counter (HandlerBucketMetrics and MetricHandlerOverflow).
const MetricHandlerBucketPrefix = "local.task.handler_le."

// MetricHandlerOverflow counts the messages slower than the last of
// HandlerBuckets.
const MetricHandlerOverflow = MetricHandlerBucketPrefix + "inf"

// HandlerBucketMetrics are the counter names of HandlerBuckets, e.g.
// "local.task.handler_le.2500000" for the 2.5 ms bucket (bound in ns).
var HandlerBucketMetrics = func() (names [len(HandlerBuckets)]string) {
	for i, b := range HandlerBuckets {
		names[i] = MetricHandlerBucketPrefix + strconv.FormatInt(int64(b), 10)
	}
	return names
}()

// handlerBucket returns the index of the bucket of a message that took d:
// into HandlerBuckets, or len(HandlerBuckets) for the overflow. A short
// loop over constants: no allocation, no lock.
func handlerBucket(d time.Duration) int {
	for i, b := range HandlerBuckets {
		if d <= b {
			return i
		}
	}
	return len(HandlerBuckets)
}

// Counters is a set of monotonically increasing counters keyed by task and
// metric, safe for concurrent use. The monitor samples it.
type Counters struct {
	mu    sync.RWMutex
	m     map[counterKey]*atomic.Uint64
	tasks map[string]*taskCounters // the same counters, by task
}

type counterKey struct{ task, metric string }

// taskCounters are one task's counters, in the order they were created.
type taskCounters struct {
	metrics []string
	vals    []*atomic.Uint64
}

// NewCounters returns an empty set.
func NewCounters() *Counters {
	return &Counters{m: map[counterKey]*atomic.Uint64{}, tasks: map[string]*taskCounters{}}
}

// Counter returns the counter for task and metric, creating it at zero.
// Hot paths keep the pointer instead of looking it up per message.
func (c *Counters) Counter(task, metric string) *atomic.Uint64 {
	k := counterKey{task, metric}
	c.mu.RLock()
	v := c.m[k]
	c.mu.RUnlock()
	if v != nil {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v = c.m[k]; v == nil {
		v = new(atomic.Uint64)
		c.m[k] = v
		tc := c.tasks[task]
		if tc == nil {
			tc = &taskCounters{}
			c.tasks[task] = tc
		}
		tc.metrics = append(tc.metrics, metric)
		tc.vals = append(tc.vals, v)
	}
	return v
}

// Add adds n to the counter for task and metric.
func (c *Counters) Add(task, metric string, n uint64) { c.Counter(task, metric).Add(n) }

// Get reads the counter for task and metric (0 if it never counted).
func (c *Counters) Get(task, metric string) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if v := c.m[counterKey{task, metric}]; v != nil {
		return v.Load()
	}
	return 0
}

// Snapshot returns task → metric → value.
func (c *Counters) Snapshot() map[string]map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]map[string]uint64, len(c.tasks))
	for task, tc := range c.tasks {
		out[task] = tc.values()
	}
	return out
}

// Task returns metric → value of one task's counters (empty if it never
// counted).
func (c *Counters) Task(task string) map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if tc := c.tasks[task]; tc != nil {
		return tc.values()
	}
	return map[string]uint64{}
}

func (tc *taskCounters) values() map[string]uint64 {
	out := make(map[string]uint64, len(tc.metrics))
	for i, metric := range tc.metrics {
		out[metric] = tc.vals[i].Load()
	}
	return out
}

// CounterMark is where one task's counters stood when Moved last looked.
type CounterMark struct {
	of  *taskCounters // which counters (Clear starts new ones)
	n   int           // how many the task had
	sum uint64        // their sum
}

// Moved returns task → metric → value for the tasks whose counters moved
// since marks (task → mark) was last updated by Moved — a counter counted
// or a new one appeared — and updates marks. The other tasks are left
// out, so watching a thousand idle tasks costs a sum each and allocates
// nothing: counters only grow, so the same number of counters with the
// same sum are the same values. A task forgotten by Clear counts as moved
// once it counts again; its mark stays in marks until the caller deletes
// it.
func (c *Counters) Moved(marks map[string]CounterMark) map[string]map[string]uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out map[string]map[string]uint64
	for task, tc := range c.tasks {
		mark := CounterMark{of: tc, n: len(tc.vals)}
		for _, v := range tc.vals {
			mark.sum += v.Load()
		}
		if prev, ok := marks[task]; ok && prev == mark {
			continue
		}
		marks[task] = mark
		if out == nil {
			out = map[string]map[string]uint64{}
		}
		out[task] = tc.values()
	}
	return out
}

// Clear forgets every counter of task (after a failsafe, history starts
// over).
func (c *Counters) Clear(task string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.DeleteFunc(c.m, func(k counterKey, _ *atomic.Uint64) bool { return k.task == task })
	delete(c.tasks, task)
}
