package host

import (
	"context"
	"fmt"
	"maps"
	"math"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/supervise"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// How long callers wait for a load (see ensureLoaded).
const (
	noWait   time.Duration = 0
	loadWait               = time.Second // configuring, and the scan and retry loop
	fullWait time.Duration = math.MaxInt64
)

// ensureLoaded returns the runner of name, loading it when this process
// should host it. force ignores a pending load backoff.
//
// Building a task may take seconds (an exec task waits for its
// co-process' hello), so the load of a task that owns its bus queue runs
// on its own goroutine, and ensureLoaded waits for it (or for a load
// already in progress) at most wait. When that is not long enough it
// returns nil and the load goes on: the caller sends through the bus,
// which the new owner drains before any local delivery. Loads that do not
// take long are thus done before the send that asked for them, while one
// that hangs holds nobody up for more than wait. With fullWait it returns the
// outcome of the load.
func (h *Host) ensureLoaded(name string, force bool, wait time.Duration) (*runner, error) {
	def0, ok := h.opts.Sources.Lookup(name)
	h.mu.Lock()
	if r := h.runners[name]; r != nil {
		h.mu.Unlock()
		return r, nil
	}
	if h.closing {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if job := h.loading[name]; job != nil {
		// Being loaded (possibly by our own caller, e.g. a log record
		// written while loading, which does not wait).
		h.mu.Unlock()
		return job.await(wait)
	}
	def, pl, cfg, known := h.placement(name, def0, ok)
	if !known && cfg != nil && pl == HostAndConsume {
		// Configured, no source has it, and it would run here: a load
		// failure.
		h.mu.Unlock()
		return nil, h.unknownTask(name, cfg)
	}
	if !known || pl == NotHere {
		h.mu.Unlock()
		return nil, nil
	}
	if f := h.failures[name]; f != nil && !force && time.Now().Before(f.next) {
		h.mu.Unlock()
		return nil, nil
	}
	job := &loadJob{done: make(chan struct{}), cfg: h.configs[name]}
	h.loading[name] = job
	h.lastLoad.Store(time.Now().UnixNano())
	h.loads.Add(1)
	h.mu.Unlock()
	// A local copy (HostLocalOnly) is always waited for: through the bus,
	// the message would reach another process' copy, out of order.
	if wait == fullWait || pl != HostAndConsume {
		h.finishLoad(name, def, pl, job)
		return job.r, job.err
	}
	go h.finishLoad(name, def, pl, job)
	return job.await(wait)
}

// loadJob is a load in progress.
type loadJob struct {
	cfg  map[string]any // the config when the load began (nil: none)
	done chan struct{}  // closed once r or err is set
	r    *runner
	err  error
}

// await returns the outcome of the load, or nil if it takes longer than
// wait.
func (j *loadJob) await(wait time.Duration) (*runner, error) {
	switch wait {
	case noWait:
		return nil, nil
	case fullWait:
		<-j.done
		return j.r, j.err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-j.done:
		return j.r, j.err
	case <-t.C:
		return nil, nil
	}
}

// finishLoad builds and starts the runner of a load ensureLoaded began.
func (h *Host) finishLoad(name string, def task.Definition, pl Placement, job *loadJob) {
	defer h.loads.Done()
	defer close(job.done)
	// Load without the lock: building the task, reading its state and
	// attaching to the bus may log, and logging may send.
	r, err := h.load(name, def, pl)

	h.mu.Lock()
	delete(h.loading, name)
	if err != nil {
		f := h.failures[name]
		if f == nil {
			f = &loadFailure{}
			h.failures[name] = f
		}
		f.count++
		f.next = time.Now().Add(supervise.TaskLoadRetry.After(f.count))
		f.err = err
		h.mu.Unlock()
		h.counters.Add(name, MetricTaskCompileFailureInternal, 1)
		h.poke() // the run loop times the retry
		h.out(oob.ChannelError, name, fmt.Sprintf("task %s failed to load (attempt %d, retrying): %v", name, f.count, err), nil)
		job.err = err
		return
	}
	if h.closing {
		h.mu.Unlock()
		r.abandon()
		job.err = ErrClosed
		return
	}
	delete(h.failures, name)
	cfg := h.configs[name] // the latest, even if it changed while loading
	if cfg == nil {
		cfg = map[string]any{} // loaded because messages wait: configured empty
	}
	// A config that changed while loading is applied after the one the
	// load began with, as if the task had been loaded at once: a rejected
	// newer config keeps the older one.
	first := job.cfg
	if first != nil && configKey(first) == configKey(cfg) {
		first = nil
	}
	h.runners[name] = r
	r.postedKey = h.confKeys[name]
	h.publishHosted()
	// A config change (or a failsafe) that arrived while the task was
	// loading (moved out again, say) found nothing to unload: it is
	// applied once the load is done, and whoever follows config changes
	// (the external supervisor) is told again, since it saw the task
	// still here.
	_, now, _, _ := h.placement(name, def, true)
	h.mu.Unlock()

	go r.loop()
	if first != nil {
		r.post(func() { r.applyConfig(first) })
	}
	r.post(func() { r.applyConfig(cfg) })
	h.counters.Add(name, MetricStartRequestInternal, 1)
	if pl == HostAndConsume {
		// Off the load's path, after a burst of loads, two at a time:
		// creating a file in the state directory costs CPU (up to a
		// millisecond on some file systems) that a thousand loads at
		// once need, and the status only describes. The unload's status
		// write waits for it (finish), and Shutdown through h.loads;
		// either one ends the wait, and then the unload writes it.
		h.loads.Add(1)
		go func() {
			defer h.loads.Done()
			defer close(r.statusDone)
			if !h.waitLoadsQuiet(r.ctx) {
				return
			}
			h.statusSem <- struct{}{}
			defer func() { <-h.statusSem }()
			h.writeStatus(r)
		}()
	}
	h.out(oob.ChannelDebug, name, fmt.Sprintf("task %s loaded (%s)", name, def.Origin), nil)
	job.r = r
	if now != pl {
		h.loads.Add(1)
		go func() {
			defer h.loads.Done()
			if err := h.reconcile(name, noWait); err != nil {
				h.out(oob.ChannelError, name, fmt.Sprintf("task %s: its config changed while it was loading: %v", name, err), nil)
			}
			if h.opts.OnConfigChanged != nil {
				h.opts.OnConfigChanged(name, cfg)
			}
		}()
	}
}

// abandon undoes a load that finished after shutdown began.
func (r *runner) abandon() {
	if c, ok := r.t.(task.Closer); ok {
		_ = c.Close(r.tc) // its goroutine never ran: nothing else touches it
	}
	if r.cons != nil {
		r.cons.Stop()
	}
	msgs, tags := r.h.tr.InProcess().Unhost(r.name)
	for i, m := range msgs {
		_ = r.h.tr.SendAsync(context.Background(), r.name, m, transit.SendOptions{})
		r.h.sentAsync()
		if i < len(tags) {
			if l := leaseOf(tags[i]); l != nil {
				l.done() // the message is the bus' now; its sender's flush covers it
			}
		}
	}
	r.stop()
}

// load builds a runner (not yet started or registered).
func (h *Host) load(name string, def task.Definition, pl Placement) (*runner, error) {
	t, err := registry.Build(def)
	if err != nil {
		return nil, err
	}
	hostLocal := h.tr.InProcess().Host
	if pl == HostAndConsume {
		hostLocal = h.tr.InProcess().HostBehindBus // catching up, see below
	}
	local, err := hostLocal(name, h.opts.MailboxSize)
	if err != nil {
		return nil, fmt.Errorf("task %s: mailbox: %w", name, err)
	}
	ctx, stop := context.WithCancel(h.ctx)
	r := &runner{
		h: h, name: name, def: def, placement: pl, statusDone: make(chan struct{}),
		log:   h.log.With("task", name),
		local: local, ctrl: make(chan func(), 16),
		ctx: ctx, stop: stop, done: make(chan struct{}),
		passed:       h.counters.Counter(name, MetricPassedMessages),
		emitted:      h.counters.Counter(name, MetricEmitMessages),
		failed:       h.counters.Counter(name, MetricTaskMessageFailure),
		handlerNanos: h.counters.Counter(name, MetricHandlerNanos),
		t:            t,
		recurs:       map[string]*recur{},
	}
	for i, metric := range HandlerBucketMetrics {
		r.handlerLE[i] = h.counters.Counter(name, metric)
	}
	r.handlerLE[len(HandlerBuckets)] = h.counters.Counter(name, MetricHandlerOverflow)
	r.tc = task.NewContext(name, r)
	r.pider, _ = t.(PIDReporter)
	if c, ok := t.(RestartCounter); ok {
		// Its own process' restarts (an exec task's co-process), for the
		// monitor's crash-loop thresholds.
		c.CountRestartsIn(h.counters.Counter(name, MetricStartCoprocess))
	}
	if def.Stateful {
		state, err := h.opts.Store.LoadState(name)
		if err != nil {
			// A corrupt state file was moved aside: start empty, loudly.
			h.out(oob.ChannelAlert, name, fmt.Sprintf("task %s: saved state unusable, starting from empty state: %v", name, err), nil)
		}
		delete(state, ".multimodule")
		r.tc.SetState(state)
		if b, err := message.Marshal(message.Message(r.tc.State())); err == nil {
			r.lastSaved = b
		}
	}
	if pl == HostAndConsume {
		// Senders switch to the bus at once (catching up), before the
		// consumer exists, so nothing they send can overtake the backlog.
		r.catchingUp.Store(true)
		cons, err := h.tr.Consume(h.ctx, name)
		if err != nil {
			h.tr.InProcess().Unhost(name)
			stop()
			return nil, fmt.Errorf("task %s: consume its bus queue: %w", name, err)
		}
		r.cons, r.busC, r.busGone = cons, cons.C(), make(chan struct{})
		if name == h.opts.Process {
			r.inflight = h.opts.InFlight
		}
	}
	return r, nil
}

func (h *Host) publishHosted() {
	m := maps.Clone(h.runners)
	h.hosted.Store(&m)
}
