package host

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Admin metric names (SPEC 7, 10, 11). Each is counted per task.
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

// Counters is a set of monotonically increasing counters keyed by task and
// metric, safe for concurrent use. The monitor samples it.
type Counters struct {
	mu sync.RWMutex
	m  map[counterKey]*atomic.Uint64
}

type counterKey struct{ task, metric string }

// NewCounters returns an empty set.
func NewCounters() *Counters { return &Counters{m: map[counterKey]*atomic.Uint64{}} }

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
	out := map[string]map[string]uint64{}
	for k, v := range c.m {
		if out[k.task] == nil {
			out[k.task] = map[string]uint64{}
		}
		out[k.task][k.metric] = v.Load()
	}
	return out
}

// Clear forgets every counter of task (after a failsafe, history starts
// over).
func (c *Counters) Clear(task string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.DeleteFunc(c.m, func(k counterKey, _ *atomic.Uint64) bool { return k.task == task })
}
