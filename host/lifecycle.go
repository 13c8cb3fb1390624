package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// RouterName is the queue every Emit goes to.
const RouterName = "Router"

// ErrUnknownTask is wrapped when no source has a task of that name.
var ErrUnknownTask = errors.New("host: unknown task")

// deliver sends msg to queue qname (on host destination, if set): into the
// mailbox of a task hosted here (loading it first when this process should
// host it), or onto the bus.
func (h *Host) deliver(ctx context.Context, qname, destination string, msg message.Message) error {
	return h.deliverLeased(ctx, qname, destination, msg, nil, nil, false)
}

// deliverLeased is deliver for a message sent by task from (nil: not a
// task) while handling a message under lease l (nil: none): if it stays
// in this process, it carries l. canonical: the sender vouches that msg
// holds only canonical values (transit.SendOptions.Canonical).
func (h *Host) deliverLeased(ctx context.Context, qname, destination string, msg message.Message, from *runner, l *lease, canonical bool) error {
	if destination != "" && destination != h.tr.HostName() {
		defer h.sentAsync()
		return h.tr.SendAsync(ctx, qname, msg, transit.SendOptions{Destination: destination, Canonical: canonical})
	}
	if r := (*h.hosted.Load())[qname]; r != nil {
		if err := h.waitCatchUp(ctx, r, from); err != nil {
			return err
		}
		r.gate.RLock()
		if !r.unhosted {
			if r.inline.Load() {
				if done, err := h.tryInline(r, msg, from, l, canonical); done {
					return err // tryInline let go of the gate
				}
			}
			err := h.sendHosted(ctx, r, msg, from, l, canonical)
			r.gate.RUnlock()
			return err
		}
		r.gate.RUnlock()
	}
	// Slow path. Announce it before looking again, so that a task that
	// becomes hosted meanwhile does not switch to local delivery while
	// this send is still on its way to the bus (see runner.tryFlip).
	out := h.outsideCounter(qname)
	out.Add(1)
	announced := true
	done := func() {
		if announced {
			announced = false
			out.Add(-1)
		}
	}
	defer done()
	if r := (*h.hosted.Load())[qname]; r == nil {
		r, _ = h.ensureLoaded(qname, false, noWait)
		if r != nil {
			done()
			if err := h.waitCatchUp(ctx, r, from); err != nil {
				return err
			}
			r.gate.RLock()
			defer r.gate.RUnlock()
			if !r.unhosted {
				return h.sendHosted(ctx, r, msg, from, l, canonical)
			}
		}
	} else {
		done()
		if err := h.waitCatchUp(ctx, r, from); err != nil {
			return err
		}
		r.gate.RLock()
		defer r.gate.RUnlock()
		if !r.unhosted {
			return h.sendHosted(ctx, r, msg, from, l, canonical)
		}
	}
	// Not hosted here, or being loaded: through the bus even if the task's
	// mailbox exists already, so this cannot overtake its bus backlog.
	defer h.sentAsync()
	return h.tr.SendAsync(ctx, qname, msg, transit.SendOptions{BusOnly: true, Canonical: canonical})
}

// outsideCounter counts the sends to qname in progress on the slow path
// (not holding any task's gate).
func (h *Host) outsideCounter(qname string) *atomic.Int64 {
	if c, ok := h.outside.Load(qname); ok {
		return c.(*atomic.Int64)
	}
	c, _ := h.outside.LoadOrStore(qname, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// sendHosted delivers to a task hosted here: into its mailbox, or — while
// it catches up with its bus backlog — through the bus. r.gate is held.
func (h *Host) sendHosted(ctx context.Context, r *runner, msg message.Message, from *runner, l *lease, canonical bool) error {
	fenced := r.catchingUp.Load()
	var tag any
	switch {
	case fenced:
		fence(msg, r.name)
		defer h.sentAsync() // through the bus
		r.fenced.Add(1)
	case msg.LocalityFor(r.name) == message.LocalityNonLocal:
		defer h.sentAsync() // forced through the bus by its overrides
	case l != nil:
		// Into the mailbox: the lease goes with it, in its slot. Held
		// before the send, since r may handle it before the send returns.
		l.hold()
		tag = l
	}
	local, err := h.sendInto(ctx, r, msg, from, tag, transit.SendOptions{Canonical: canonical})
	if err != nil && fenced {
		r.fenced.Add(-1)
	}
	if tag != nil && !local {
		// Refused, or on the bus after all (counted, so that the flush
		// before the lease's acknowledgement covers it): nothing here
		// carries the lease.
		if err == nil {
			h.sentAsync()
		}
		l.done()
	}
	return err
}

// waitCatchUp holds a sender to task r back while r catches up with its
// bus queue (sends to it go through the bus, behind its backlog) and
// either a mailbox's worth of this process' messages are on their way
// to r that way — the backpressure a full mailbox gives — or r asked
// senders to pause so that its backlog can run out (runner.pauseSenders).
// Without it a sender faster than r would keep r catching up for good.
// Like a wait for room in a full mailbox, it ends when r, directly or
// through the tasks it waits on, waits for from (a cycle), or when r
// stops.
func (h *Host) waitCatchUp(ctx context.Context, r, from *runner) error {
	held := func() bool {
		return r.catchingUp.Load() &&
			(r.fenced.Load() >= int64(h.opts.MailboxSize) || time.Now().UnixNano() < r.pauseUntil.Load())
	}
	if from == r || !held() {
		return nil
	}
	if from != nil {
		prev := from.waitingOn.Swap(r)
		defer from.waitingOn.Store(prev)
	}
	t := time.NewTimer(cycleCheckEvery)
	defer t.Stop()
	for {
		wake := r.caught.wait()
		if !held() || (from != nil && waitsFor(r, from)) {
			return nil
		}
		select {
		case <-wake:
		case <-t.C:
			t.Reset(cycleCheckEvery)
		case <-r.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("send to %s: waiting for it to catch up with its bus queue: %w", r.name, ctx.Err())
		}
	}
}

// cycleCheckEvery is how often a task waiting for room in another task's
// mailbox looks for a cycle of waiting tasks.
const cycleCheckEvery = 10 * time.Millisecond

// sendInto sends msg into hosted task r's mailbox for task from (nil: not
// from a task). A full mailbox makes the sender wait for room, as
// backpressure — except when r waits itself, directly or through other
// tasks, for room in from's mailbox: with routes that go round (A →
// Router → B → Router, a task sending to itself) every task of the cycle
// would wait forever, the daemon's shutdown too. Then the message goes in
// beyond r's capacity (transit.SendOptions.Overflow), a warning says so
// (at most every 10 s per task), and the cycle moves on; order is kept (it
// is the same mailbox). A chain without a cycle keeps its backpressure.
// tag goes into the mailbox with the message (transit.SendAsyncTagged);
// local reports that it did.
func (h *Host) sendInto(ctx context.Context, r *runner, msg message.Message, from *runner, tag any, opts transit.SendOptions) (local bool, err error) {
	if from == nil {
		return h.tr.SendAsyncTagged(ctx, r.name, msg, tag, opts)
	}
	try := opts
	try.NonBlocking = true
	local, err = h.tr.SendAsyncTagged(ctx, r.name, msg, tag, try)
	if !errors.Is(err, transit.ErrFull) {
		return local, err
	}
	from.waitingOn.Store(r)
	defer from.waitingOn.Store(nil)
	for {
		if waitsFor(r, from) {
			if now := time.Now().UnixNano(); now-from.cycleWarned.Load() > int64(10*time.Second) {
				from.cycleWarned.Store(now)
				h.log.Warn("tasks wait for room in each other's full mailboxes (a routing cycle): delivering beyond capacity instead of waiting forever",
					"task", from.name, "to", r.name)
			}
			over := opts
			over.Overflow = true
			return h.tr.SendAsyncTagged(ctx, r.name, msg, tag, over)
		}
		wctx, cancel := context.WithTimeout(ctx, cycleCheckEvery)
		local, err = h.tr.SendAsyncTagged(wctx, r.name, msg, tag, opts)
		cancel()
		if err == nil || !errors.Is(err, transit.ErrFull) || ctx.Err() != nil {
			return local, err
		}
	}
}

// waitsFor reports whether r is from, or waits (through the tasks it
// waits on) for room in from's mailbox.
func waitsFor(r, from *runner) bool {
	for range 64 {
		if r == nil {
			return false
		}
		if r == from {
			return true
		}
		r = r.waitingOn.Load()
	}
	return false
}

// Send delivers msg to queue qname from the framework (control, out of
// band, tests) exactly as a task's send would.
func (h *Host) Send(ctx context.Context, qname string, msg message.Message) error {
	return h.deliver(ctx, qname, "", msg)
}

// placement decides where name runs given its current config.
// Call it with h.mu held and with def, ok from h.lookup(name), done before
// taking the lock: a source may need time to answer (an exec task's
// describe run).
func (h *Host) placement(name string, def task.Definition, ok bool) (task.Definition, Placement, map[string]any, bool) {
	cfg := h.configs[name]
	if !ok {
		// Unknown: the process that would host and consume it (asked
		// as for a stateless task of that name) reports it; elsewhere
		// (an external process, which hosts one task) it is none of
		// this process' business.
		return task.Definition{}, h.opts.Placement(name, task.Definition{Name: name}, cfg), cfg, false
	}
	if failsafed, _ := h.opts.Store.ReadFailsafe(name); failsafed != nil {
		return def, NotHere, cfg, true
	}
	return def, h.opts.Placement(name, def, cfg), cfg, true
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
// take long are thus done in order, as before, while one that hangs
// holds nobody up for more than wait. With fullWait it returns the
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
		f.next = time.Now().Add(loadBackoff(f.count))
		f.err = err
		h.mu.Unlock()
		h.counters.Add(name, MetricTaskCompileFailureInternal, 1)
		h.out("error", name, fmt.Sprintf("task %s failed to load (attempt %d, retrying): %v", name, f.count, err), nil)
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
	h.out("debug", name, fmt.Sprintf("task %s loaded (%s)", name, def.Origin), nil)
	job.r = r
	if now != pl {
		h.loads.Add(1)
		go func() {
			defer h.loads.Done()
			if err := h.reconcile(name, noWait); err != nil {
				h.out("error", name, fmt.Sprintf("task %s: its config changed while it was loading: %v", name, err), nil)
			}
			if h.opts.OnConfigChanged != nil {
				h.opts.OnConfigChanged(name, cfg)
			}
		}()
	}
}

// loadBackoff is how long after its count-th failed load in a row a task
// is tried again: 1 s, doubling, at most 30 s.
func loadBackoff(count int) time.Duration {
	return min(time.Second<<min(count-1, 5), 30*time.Second)
}

// unknownTask handles configured task name (config cfg) that no source
// has: a load failure like any other (SPEC: counted and explained) —
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
	f.next = time.Now().Add(loadBackoff(f.count))
	f.err = err
	count := f.count
	h.mu.Unlock()
	metric := MetricTaskCompileFailureInternal
	if IsExternal(cfg) {
		metric = MetricTaskCompileFailureExternal
	}
	h.counters.Add(name, metric, 1)
	h.out("error", name, fmt.Sprintf("task %s failed to load (attempt %d, retrying): %v", name, count, why), nil)
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

// abandon undoes a load that finished after shutdown began.
func (r *runner) abandon() {
	if c, ok := r.t.(task.Closer); ok {
		_ = c.Close(r.tc) // its goroutine never ran: nothing else touches it
	}
	if r.cons != nil {
		r.cons.Stop()
	}
	msgs, tags := r.h.tr.UnhostLocalTagged(r.name)
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
	hostLocal := h.tr.HostLocal
	if pl == HostAndConsume {
		hostLocal = h.tr.HostLocalBehindBus // catching up, see below
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
	r.tc = task.NewContext(name, r)
	r.pider, _ = t.(interface{ PID() int })
	if c, ok := t.(interface{ CountRestartsIn(*atomic.Uint64) }); ok {
		// Its own process' restarts (an exec task's co-process), for the
		// monitor's crash-loop thresholds.
		c.CountRestartsIn(h.counters.Counter(name, MetricStartCoprocess))
	}
	if def.Stateful {
		state, err := h.opts.Store.LoadState(name)
		if err != nil {
			// A corrupt state file was moved aside: start empty, loudly.
			h.out("alert", name, fmt.Sprintf("task %s: saved state unusable, starting from empty state: %v", name, err), nil)
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
			h.tr.UnhostLocal(name)
			stop()
			return nil, fmt.Errorf("task %s: consume its bus queue: %w", name, err)
		}
		r.cons, r.busC = cons, cons.C()
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

// A task's status file written at load waits until no load has begun
// for statusQuiet, or statusMaxDelay after the load at the latest.
const (
	statusQuiet    = 250 * time.Millisecond
	statusMaxDelay = 5 * time.Second
)

// waitLoadsQuiet waits until the loads in progress have paused (see
// statusQuiet); false when ctx ended first.
func (h *Host) waitLoadsQuiet(ctx context.Context) bool {
	deadline := time.Now().Add(statusMaxDelay)
	for {
		wait := min(time.Until(time.Unix(0, h.lastLoad.Load()).Add(statusQuiet)), time.Until(deadline))
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// writeStatus writes the status of the task of r: the hosting process,
// its usage (the whole process's: shared with every task it hosts, unless
// it is the task's own external process), and the task's kind.
func (h *Host) writeStatus(r *runner) {
	u := h.usage()
	st := store.Status{
		PID:        h.self.PID,
		StartTime:  h.self.StartTime,
		Cmdline:    h.self.Cmdline,
		SaveTS:     float64(time.Now().UnixNano()) / 1e9,
		External:   h.opts.Process != "main",
		Shared:     h.opts.Process == "main",
		Stateful:   r.def.Stateful,
		FDs:        u.FDs,
		Threads:    u.Threads,
		RSSBytes:   u.RSSBytes,
		CPUSeconds: u.CPUSeconds,
		CoPID:      int(r.coPID.Load()),
	}
	if err := h.opts.Store.SaveStatus(r.name, st); err != nil {
		h.out("error", r.name, "save status: "+err.Error(), nil)
	}
}

// usage samples this process's usage for the status files, at most
// every usageEvery: a burst of loads writes a status per task.
func (h *Host) usage() procid.Usage {
	h.usageMu.Lock()
	defer h.usageMu.Unlock()
	if now := time.Now(); now.Sub(h.usageAt) >= usageEvery {
		if u, err := procid.UsageOf(h.self.PID); err == nil {
			h.usageLast, h.usageAt = u, now
		}
	}
	return h.usageLast
}

// usageEvery is how old the usage in a status file may be (usage).
const usageEvery = time.Second

// Unload stops hosting task name without losing a message: it stops taking
// from the bus, finishes what was fetched, moves what still waits in its
// mailbox onto the bus (in order, before any newer send), saves its state
// and calls Close.
func (h *Host) Unload(ctx context.Context, name string) error {
	return h.unload(ctx, name, true)
}

// UnloadNow stops hosting task name at once (a failsafe): unlike Unload it
// does not first handle what the task fetched from the bus — that is left
// unacknowledged, and the bus delivers it again, first and in order, to
// the task's next owner. The message being handled is finished; what
// waits in its mailbox moves onto the bus, as with Unload. For a task that
// fails at every message (an exec task whose co-process dies at every
// start), handling the fetched messages first would fail each of them, and
// take long.
func (h *Host) UnloadNow(ctx context.Context, name string) error {
	return h.unload(ctx, name, false)
}

func (h *Host) unload(ctx context.Context, name string, drain bool) error {
	h.mu.Lock()
	r := h.runners[name]
	h.mu.Unlock()
	if r == nil {
		return nil
	}
	if drain {
		h.drainBus(r)
	} else {
		h.dropBus(r)
	}
	err := h.unhost(ctx, r)
	h.finish(r)
	h.mu.Lock()
	delete(h.runners, name)
	h.publishHosted()
	h.mu.Unlock()
	h.counters.Add(name, MetricStopInternal, 1)
	if err != nil {
		return fmt.Errorf("host: unload %s: %w", name, err)
	}
	return nil
}

// dropBus stops the runner's bus consumer once the message being handled
// is done, takes nothing more, and lets go of what was fetched without
// acknowledging it. What was handled is acknowledged.
func (h *Host) dropBus(r *runner) {
	r.paused.Store(true) // the loop takes nothing more
	var busC <-chan *transit.Delivery
	r.call(func() {
		if r.cons != nil {
			r.cons.Stop()
		}
		busC, r.busC, r.cons = r.busC, nil, nil
	})
	if busC != nil {
		for range busC {
			// Not acknowledged: delivered again to the next owner.
		}
	}
	h.ackHandled(r)
}

// drainBus stops the runner's bus consumer and waits until every fetched
// delivery has been handled and acknowledged.
func (h *Host) drainBus(r *runner) {
	var cons *transit.Consumer
	r.call(func() { cons = r.cons })
	if cons == nil {
		return
	}
	cons.Stop()
	for {
		var drained bool
		if !r.call(func() { drained = r.busC == nil || !r.configured }) || drained {
			break
		}
		select {
		case <-r.done:
			return
		case <-time.After(time.Millisecond):
		}
	}
	h.ackHandled(r)
}

// ackHandled acknowledges what the runner handled, once what it caused
// here is handled too (bounded: what stays unacknowledged is delivered
// again).
func (h *Host) ackHandled(r *runner) {
	for i := 0; i < 2000; i++ {
		left := 0
		if !r.call(func() { r.ackPending(); left = len(r.pending) }) || left == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// unhost takes the runner's mailbox away and moves what still waits in it
// onto the bus, in order. Senders are held off (the gate) until then, so
// no newer message overtakes the leftovers; afterwards their sends go to
// the bus. The gate is taken before pausing, so a sender waiting for room
// in a full mailbox can still finish.
func (h *Host) unhost(ctx context.Context, r *runner) error {
	r.gate.Lock()
	defer r.gate.Unlock()
	r.unhosted = true
	r.paused.Store(true)
	select { // wake the loop so it sees paused
	case r.ctrl <- func() {}:
	default:
	}
	leftovers, tags := h.tr.UnhostLocalTagged(r.name)
	var errs []error
	var moved []*lease
	for _, tag := range tags {
		if l := leaseOf(tag); l != nil {
			moved = append(moved, l) // free once the move is flushed
		}
	}
	defer func() {
		for _, l := range moved {
			l.done()
		}
	}()
	for _, m := range leftovers {
		if err := h.tr.SendAsync(ctx, r.name, m, transit.SendOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("move waiting message of %s to the bus: %w", r.name, err))
		}
	}
	if len(leftovers) > 0 {
		if err := h.tr.Flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finish saves state, closes the task and stops its goroutine. The gate
// taken by unhost is released.
func (h *Host) finish(r *runner) {
	r.call(func() {
		r.closed = true
		r.stopRecurs()
		if r.saveTimer != nil {
			r.saveTimer.Stop()
			r.saveTimer = nil
		}
		r.saveState(true)
		if c, ok := r.t.(task.Closer); ok {
			if err := r.safeCall("close", func() error { return c.Close(r.tc) }); err != nil {
				h.out("error", r.name, fmt.Sprintf("task %s: close: %v", r.name, err), nil)
			}
		}
	})
	r.stop()
	<-r.done
	if r.placement == HostAndConsume {
		<-r.statusDone // the load's, written first
		h.writeStatus(r)
	}
}

// scan loads tasks whose bus queues hold waiting messages.
func (h *Host) scan() {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	stats, err := h.tr.BusWaiting(ctx)
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

// Loaded lists the tasks hosted in this process.
func (h *Host) Loaded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.runners))
}

// Shutdown stops the host in order: stop taking from the bus,
// deliver everything already waiting in in-memory mailboxes, move what
// cannot be delivered onto the bus, save the state and status of every
// stateful task, and wait for every publish to be acknowledged.
func (h *Host) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil
	}
	h.closing = true
	runners := slices.Collect(maps.Values(h.runners))
	h.mu.Unlock()

	for _, r := range runners {
		r.call(func() {
			r.stopRecurs()
			if r.cons != nil {
				r.cons.Stop()
			}
		})
	}
	h.quiesce(ctx, runners)
	var errs []error
	for _, r := range runners {
		if err := h.unhost(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := h.tr.Flush(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, r := range runners {
		h.finish(r)
	}
	h.loads.Wait() // loads still building their task are abandoned
	h.mu.Lock()
	clear(h.runners)
	h.publishHosted()
	h.mu.Unlock()
	close(h.saveCh)
	h.wg.Wait()
	h.cancel()
	return errors.Join(errs...)
}

// quiesce waits until no task has anything left to handle: every mailbox
// and fetched bus buffer is empty and nothing was handled during a whole
// round of barriers.
func (h *Host) quiesce(ctx context.Context, runners []*runner) {
	for {
		before := handledBy(runners)
		idle := true
		for _, r := range runners {
			var empty bool
			r.call(func() {
				empty = !r.configured || (r.local.Len() == 0 && r.busC == nil)
			})
			if !empty {
				idle = false
			}
		}
		if idle && handledBy(runners) == before {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
	for _, r := range runners {
		r.call(func() { r.ackPending() })
	}
}

// handledBy sums the messages the runners have taken.
func handledBy(runners []*runner) uint64 {
	var n uint64
	for _, r := range runners {
		n += r.handled.Load()
	}
	return n
}

// TaskInfo describes a task hosted in this process.
type TaskInfo struct {
	Name       string
	Placement  Placement
	Stateful   bool
	Mailbox    int // messages waiting in its in-memory mailbox
	MailboxCap int
	CoPID      int // the pid of its co-process (exec tasks), or 0
}

// Tasks describes every task hosted in this process, sorted by name.
func (h *Host) Tasks() []TaskInfo {
	hosted := *h.hosted.Load()
	out := make([]TaskInfo, 0, len(hosted))
	for _, name := range slices.Sorted(maps.Keys(hosted)) {
		r := hosted[name]
		out = append(out, TaskInfo{Name: name, Placement: r.placement, Stateful: r.def.Stateful, Mailbox: r.local.Len(), MailboxCap: r.local.Cap(), CoPID: int(r.coPID.Load())})
	}
	return out
}

// Settled reports whether task name is hosted here and has caught up with
// its bus queue, so that sends from this process reach it in memory.
func (h *Host) Settled(name string) bool {
	r := (*h.hosted.Load())[name]
	return r != nil && !r.catchingUp.Load()
}

// Hosts reports whether task name is loaded (or being loaded or unloaded)
// in this process. The external supervisor never starts a task's own
// process while this is true: two owners would share its queue and state.
func (h *Host) Hosts(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runners[name] != nil || h.loading[name] != nil
}
