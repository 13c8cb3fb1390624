package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/supervise"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/transit"
)

// ErrUnknownTask is wrapped when no source has a task of that name.
var ErrUnknownTask = errors.New("host: unknown task")

// placement decides where name runs given its current config.
// Call it with h.mu held and with def, ok from h.lookup(name), done before
// taking the lock: a source may need time to answer (an exec task's
// describe run).
func (h *Host) placement(name string, def task.Definition, ok bool) (task.Definition, Placement, map[string]any, bool) {
	cfg := h.configs[name]
	if IsPlaced(cfg) {
		// Run by the box holding its lease, outside any Host.
		if !ok {
			def = task.Definition{Name: name}
		}
		return def, NotHere, cfg, ok
	}
	if !ok {
		// Unknown: the process that would host and consume it (asked
		// as for a stateless task of that name) reports it; elsewhere
		// (an external process, which hosts one task) it is none of
		// this process' business.
		return task.Definition{}, h.opts.Placement(name, task.Definition{Name: name}, cfg), cfg, false
	}
	// A failsafed task runs nowhere. Its failsafe is looked up only for a
	// task that would run here: every message to a task hosted elsewhere
	// (an external's) asks, and the lookup is the dearer question.
	pl := h.opts.Placement(name, def, cfg)
	if pl == NotHere {
		return def, NotHere, cfg, true
	}
	if failsafed, _ := h.opts.Store.ReadFailsafe(name); failsafed != nil {
		return def, NotHere, cfg, true
	}
	return def, pl, cfg, true
}

// reconcile makes the hosting of one task match its config: load it,
// reconfigure it, or unload it when it should not run here (any more).
// A load is waited for as ensureLoaded says.
func (h *Host) reconcile(name string, wait time.Duration) error {
	def0, ok := h.opts.Sources.Lookup(name)
	h.mu.Lock()
	r := h.runners[name]
	def, pl, cfg, known := h.placement(name, def0, ok)
	// The runner is given a config only when it has not had this one:
	// the supervisor's safety pass reconciles every task every few
	// seconds, and must not wake every idle runner.
	repost := r != nil && r.postedKey != h.confKeys[name]
	if repost {
		r.postedKey = h.confKeys[name]
	}
	h.mu.Unlock()
	switch {
	case r != nil && (!known || pl == NotHere || pl != r.placement):
		if err := h.Unload(context.Background(), name); err != nil {
			return err
		}
		if !known {
			if cfg != nil && pl == HostAndConsume {
				return h.unknownTask(name, cfg) // its source lost it
			}
			return nil
		}
		if pl == NotHere {
			return nil
		}
		_, err := h.ensureLoaded(name, true, wait)
		if wait != fullWait {
			err = nil // the load reports its failure itself
		}
		return err
	case r != nil:
		if cfg != nil && repost {
			r.post(func() { r.applyConfig(cfg) })
		}
		return nil
	case !known:
		if cfg != nil && pl == HostAndConsume {
			return h.unknownTask(name, cfg)
		}
		return nil
	case pl == NotHere:
		_ = def
		return nil
	case pl == HostLocalOnly:
		// A local copy (a stateless task in an external process) is
		// loaded when something here sends to it, not because it has a
		// config: its recurring work runs in the daemon's copy only.
		return nil
	}
	_, err := h.ensureLoaded(name, true, wait)
	if wait != fullWait {
		err = nil // the load reports its failure itself
	}
	return err
}

// unknownTask handles configured task name (config cfg) that no source
// has: a load failure like any other, counted and explained —
// counted as task_compile_failure.internal (.external when cfg says
// is_external), reported on the error channel with the sources searched,
// and tried again after the load back-off (a task may appear later: an
// exec task's executable). Within the back-off it only returns the
// error. The error wraps ErrUnknownTask.
func (h *Host) unknownTask(name string, cfg map[string]any) error {
	var why error = h.opts.Sources.NotFound(name)
	if h.opts.NotFound != nil {
		why = h.opts.NotFound(name)
	}
	err := fmt.Errorf("%w: %w", ErrUnknownTask, why)
	h.mu.Lock()
	f := h.failures[name]
	if f != nil && time.Now().Before(f.next) {
		h.mu.Unlock()
		return err
	}
	if f == nil {
		f = &loadFailure{}
		h.failures[name] = f
	}
	f.count++
	f.next = time.Now().Add(supervise.TaskLoadRetry.After(f.count))
	f.err = err
	count := f.count
	h.mu.Unlock()
	h.poke() // the run loop times the retry
	metric := MetricTaskCompileFailureInternal
	if IsExternal(cfg) {
		metric = MetricTaskCompileFailureExternal
	}
	h.counters.Add(name, metric, 1)
	h.out(oob.ChannelError, name, fmt.Sprintf("task %s failed to load (attempt %d, retrying): %v", name, count, why), nil)
	return err
}

// LoadFailures returns every task whose last load failed (not loaded
// since), by name.
func (h *Host) LoadFailures() map[string]LoadFailure {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]LoadFailure, len(h.failures))
	for name, f := range h.failures {
		out[name] = LoadFailure{Count: f.count, Next: f.next, Err: f.err}
	}
	return out
}

// LoadFailureOf returns the load failure of task name, if its last load
// failed.
func (h *Host) LoadFailureOf(name string) (LoadFailure, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.failures[name]
	if f == nil {
		return LoadFailure{}, false
	}
	return LoadFailure{Count: f.count, Next: f.next, Err: f.err}, true
}

// scan loads tasks whose bus queues hold waiting messages.
func (h *Host) scan() {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	stats, err := h.tr.Stats(ctx, transit.QueueFilter{Waiting: true, BusOnly: true})
	if err != nil {
		h.log.Debug("scan queues", "error", err)
		return
	}
	for _, st := range stats {
		if st.Msgs == 0 {
			continue
		}
		h.mu.Lock()
		_, loaded := h.runners[st.Name]
		h.mu.Unlock()
		if !loaded {
			_, _ = h.ensureLoaded(st.Name, false, loadWait)
		}
	}
}

// retryFailed retries configured tasks whose load failed, after backoff.
func (h *Host) retryFailed() {
	h.mu.Lock()
	var due []string
	now := time.Now()
	for name, f := range h.failures {
		if _, configured := h.configs[name]; configured && now.After(f.next) {
			due = append(due, name)
		}
	}
	h.mu.Unlock()
	for _, name := range due {
		_, _ = h.ensureLoaded(name, false, loadWait)
	}
}
