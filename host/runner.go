package host

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transform"
	"github.com/multimodule/multimodule/transit"
)

// runner is one loaded task: its goroutine, mailbox and bus consumer.
// Every field below "task goroutine only" is touched only by loop.
type runner struct {
	h         *Host
	name      string
	def       task.Definition
	placement Placement
	log       *slog.Logger

	local *transit.Local
	ctrl  chan func()
	ctx   context.Context
	stop  context.CancelFunc
	done  chan struct{}

	// gate serializes deliveries into local against unhosting it: senders
	// hold it shared, an unload holds it exclusively.
	gate     sync.RWMutex
	unhosted bool
	// exec is held by whoever runs the task: its goroutine (loop) or an
	// emitter handling a message inline (Host.tryInline). Fields below
	// "task goroutine only" are touched only under it.
	exec sync.Mutex
	// inline: the task allows tryInline (a task.Inliner); set once
	// configured.
	inline  atomic.Bool
	inlined atomic.Uint64 // messages handled inline (for tests)
	// waitingOn is the task whose full mailbox this task's goroutine waits
	// on to send (nil: none), for the cycle check of Host.sendInto.
	waitingOn   atomic.Pointer[runner]
	cycleWarned atomic.Int64 // unix ns of the last routing-cycle warning

	passed, emitted, failed, handlerNanos *atomic.Uint64
	// handled counts every message taken (task messages and state
	// transforms), for quiescence; per runner, so that tasks on different
	// cores do not share its cache line.
	handled atomic.Uint64
	paused  atomic.Bool // set by unhost: take nothing more
	// catchingUp: the task was just loaded as the owner of its bus queue;
	// until the queue's backlog is handled, this process' sends to it go
	// through the bus too, so they cannot overtake its own earlier sends
	// waiting there (per-sender order across migrations).
	catchingUp atomic.Bool
	// Catch-up backpressure (Host.waitCatchUp): fenced counts messages
	// this process sent through the bus to the task while it caught up
	// and it has not taken yet; pauseUntil (unix ns) holds senders back
	// for a moment so that a short backlog can run out (tryFlip); caught
	// wakes the senders waiting on either.
	fenced     atomic.Int64
	pauseUntil atomic.Int64
	caught     wakeGate
	// coPID is the pid of the task's co-process (exec tasks), for the
	// monitor; 0 when it has none.
	coPID atomic.Int64
	pider interface{ PID() int }
	// postedKey is the key of the config last given to the task (under
	// h.mu), so reconciling an unchanged config does not wake it.
	postedKey string
	// statusDone is closed once the status file written at load is
	// (HostAndConsume).
	statusDone chan struct{}

	// task goroutine only
	t          task.Task
	tc         *task.Context
	config     map[string]any
	configKey  string
	configured bool
	cons       *transit.Consumer
	busC       <-chan *transit.Delivery
	inflight   InFlight                    // Options.InFlight for the task of an external process; nil otherwise
	batch      [localBatch]message.Message // taken from the mailbox, being handled
	batchTags  [localBatch]any             // their leases (mailbox tags), nil for none
	cost       time.Duration               // moving average of the time taken per message (see inlineCostMax)
	inlineRun  int                         // messages this turn handed to other tasks inline (inlinePerTurn)
	nextPause  int64                       // unix ns: pauseSenders may hold senders back again from then
	pending    []pendingAck                // handled, waiting for the ack (in delivery order)
	canonical  bool                        // the task is a canonicalSender
	cur        *lease                      // the lease of the message being handled
	in         message.Message             // the message being handled
	gaveAway   bool                        // the handler sent it on (its new owner may change it)
	recurs     map[string]*recur
	lastSaved  []byte
	saveTimer  *time.Timer
	closed     bool
}

type recur struct {
	name     string
	interval time.Duration
	work     func(*task.Context)
	timer    *time.Timer
	pending  atomic.Bool
	stopped  atomic.Bool
}

// localBatch bounds how many mailbox messages one turn of the loop takes
// and handles before it looks at control, the bus and the context again.
const localBatch = 64

// post runs f on the task goroutine; it fails if the runner has stopped.
func (r *runner) post(f func()) bool {
	select {
	case r.ctrl <- f:
		return true
	case <-r.done:
		return false
	}
}

// call runs f on the task goroutine and waits for it.
func (r *runner) call(f func()) bool {
	ch := make(chan struct{})
	if !r.post(func() { f(); close(ch) }) {
		return false
	}
	select {
	case <-ch:
		return true
	case <-r.done:
		return false
	}
}

func (r *runner) loop() {
	defer close(r.done)
	// exec is held whenever this goroutine runs the task or touches its
	// state; it is let go only while waiting in the select below, where
	// an emitter may take it to handle a message inline (tryInline).
	r.exec.Lock()
	defer r.exec.Unlock()
	for {
		r.inlineRun = 0
		local := r.configured && !r.paused.Load()
		var busC <-chan *transit.Delivery
		if local {
			busC = r.busC
		}
		// Acknowledge handled bus messages once nothing more is buffered,
		// after the messages they caused are safely on the bus.
		var ackRetry <-chan time.Time
		if len(r.pending) > 0 && (len(busC) == 0 || len(r.pending) >= 256) {
			r.ackPending()
			if len(r.pending) > 0 {
				// Waiting for what they caused in other tasks here.
				ackRetry = time.After(2 * time.Millisecond)
			}
		}
		var retryFlip <-chan time.Time
		if r.catchingUp.Load() && busC != nil && len(busC) == 0 {
			if !r.tryFlip() {
				retryFlip = time.After(5 * time.Millisecond)
			}
		}
		// Bus deliveries first: they are older than anything a local
		// sender can have sent since this task was loaded.
		if busC != nil {
			select {
			case d, ok := <-busC:
				r.takeBus(d, ok)
				continue
			default:
			}
		}
		// Then the mailbox, a batch per turn, unless control work waits
		// (or the task is stopping); the select below sleeps on the
		// mailbox only after a Drain found it empty (Local.Ready).
		var readyC <-chan struct{}
		if local && len(r.ctrl) == 0 && r.ctx.Err() == nil {
			took, open := r.takeLocal()
			if took {
				continue
			}
			if open { // else unhosted (Ready is closed): wait for the rest
				readyC = r.local.Ready()
			}
		}
		var (
			f    func()
			d    *transit.Delivery
			ok   bool
			what int
		)
		r.exec.Unlock()
		select {
		case f = <-r.ctrl:
			what = 1
		case <-readyC:
		case d, ok = <-busC:
			what = 2
		case <-retryFlip:
		case <-ackRetry:
		case <-r.ctx.Done():
			what = 3
		}
		r.exec.Lock()
		switch what {
		case 1:
			f()
		case 2:
			r.takeBus(d, ok)
		case 3:
			r.ackPending()
			return
		}
	}
}

// inlineCostMax: emitters handle a message inline (tryInline) only while
// the task's recent messages took less than this each. Inline saves a
// hand-over (waking the task's goroutine, which on 2 cores costs tens of
// microseconds of latency) but moves the work onto the emitter's core:
// for a short handler (routing to one queue: ≈ 0.5 µs) that is the better
// deal; a long one (many routes, copies for several forwards) should run
// on a core of its own, in parallel with its emitters.
var inlineCostMax = 2 * time.Microsecond

// inlinePerTurn bounds how many messages a task's one turn of work (a
// handler call, a recurring run) hands to other tasks inline. Below it,
// a burst of emits is routed and handled on the emitter's goroutine with
// no hand-over at all (at a moderate rate that is the lowest latency:
// every hand-over is a goroutine waking up and waiting for a core); above
// it the rest goes through the mailboxes, so that a task emitting a long
// run at once has the Router's and the consumers' goroutines working in
// parallel on it (on other cores). task.Inliner documents the figure.
const inlinePerTurn = 16 * localBatch

// tryInline handles msg, sent to r by another goroutine, on that goroutine,
// if r allows it (a task.Inliner, such as the Router) and is idle: its
// goroutine waits for work, no control work (a config, a recurring run)
// waits for it, its bus buffer is empty, it is configured, not catching
// up, not paused. It saves a hand-over to another goroutine
// (and waiting for a core) per message. While the message is handled the
// sender holds r.exec, so r's own goroutine does not run and nothing else
// handles a message of r: one message at a time, in queue order — what
// waits in r's mailbox (sent before r's goroutine woke up for it) is
// older and is handled first, here. r.gate is held (shared) by the caller
// and is let go here when the message was handled inline (done true), so
// that the handler's own sends (perhaps to r) do not take it again. err
// is the send's error (the message was refused).
func (h *Host) tryInline(r *runner, msg message.Message, from *runner, l *lease, canonical bool) (done bool, err error) {
	if from != nil && from.inlineRun >= inlinePerTurn {
		return false, nil
	}
	if !r.exec.TryLock() {
		return false, nil
	}
	if !r.configured || r.closed || r.cost >= inlineCostMax || r.paused.Load() || r.catchingUp.Load() ||
		r.ctx.Err() != nil || len(r.busC) > 0 || len(r.ctrl) > 0 {
		r.exec.Unlock()
		return false, nil
	}
	m, local, err := h.tr.PrepareLocal(r.name, msg, canonical)
	if err != nil || !local {
		r.exec.Unlock()
		if err != nil {
			r.gate.RUnlock()
			return true, err
		}
		return false, nil
	}
	r.gate.RUnlock()
	if from != nil {
		// The emitter's goroutine runs r's handler: while r waits for room
		// somewhere, so does the emitter (Host.sendInto's cycle check; r
		// may well send back to the emitter, whose mailbox only this
		// goroutine drains).
		prevWait := from.waitingOn.Swap(r)
		defer from.waitingOn.Store(prevWait)
	}
	// This message is r's turn: what r hands on inline counts from zero.
	prevRun := r.inlineRun
	r.inlineRun = 0
	// What waits in r's mailbox is older (some of it may be this sender's):
	// it goes first, handled here rather than after r's goroutine has been
	// woken for it and found a core. Messages others put in meanwhile are
	// not this sender's, and may stay.
	for older := r.local.Len(); older > 0; older -= localBatch {
		if took, _ := r.takeLocal(); !took {
			break
		}
	}
	prev := r.cur
	r.cur = l // what the handler sends carries the sender's lease
	start := time.Now()
	var passed uint64
	if r.handle(m, nil) {
		passed = 1
	}
	r.inlineRun = prevRun
	r.account(1, passed, start)
	r.inlined.Add(1)
	if from != nil {
		from.inlineRun++
	}
	r.cur = prev
	r.exec.Unlock()
	return true, nil
}

// takeLocal handles the messages waiting in the mailbox, at most
// localBatch of them, and reports whether there were any, and whether the
// mailbox is still hosted. The batch is timed and counted as a whole: two
// clock reads and three counter updates per batch, not per message.
func (r *runner) takeLocal() (took, open bool) {
	n, open := r.local.DrainTagged(r.batch[:], r.batchTags[:])
	if n == 0 {
		return false, open
	}
	start := time.Now()
	var passed uint64
	at, _ := r.t.(aheadTaker)
	next := 0 // the first message not announced to at
	for i, m := range r.batch[:n] {
		if at != nil && i >= next {
			next = r.announce(at, i, n)
		}
		l := leaseOf(r.batchTags[i])
		r.batch[i], r.batchTags[i] = nil, nil
		if m != nil && r.handle(m, l) {
			passed++
		}
	}
	r.account(uint64(n), passed, start)
	return true, open
}

// aheadTaker is a task that wants to know which messages its Message is
// called with next: the exec adapter writes them to its co-process ahead
// (protocol 2, pipelined), and still answers each in its own Message call.
// The runner promises that these are the task's next calls, in order.
type aheadTaker interface {
	Ahead(tc *task.Context, msgs []message.Message)
}

// announce tells at about the run of batch messages from i that its
// handler gets (up to a state transform, which handle applies itself),
// when there are several, and returns the index after the run.
func (r *runner) announce(at aheadTaker, i, n int) int {
	j := i
	for j < n && r.batch[j] != nil && !isTransform(r.batch[j]) {
		j++
	}
	if j-i > 1 {
		at.Ahead(r.tc, r.batch[i:j])
	}
	return max(j, i+1)
}

// isTransform reports whether m is a state transform for the task
// (applied by the host, not given to the handler).
func isTransform(m message.Message) bool {
	ctl, ok := m[".multimodule"].(map[string]any)
	if !ok {
		return false
	}
	_, ok = ctl["transform"].(map[string]any)
	return ok
}

func (r *runner) takeBus(d *transit.Delivery, ok bool) {
	if !ok {
		// The consumer was stopped (the task is being unloaded). A
		// catch-up stays on: messages this process sent through the bus
		// and the consumer did not fetch are still there, so later sends
		// must follow them there, not overtake them in the mailbox.
		r.busC = nil
		r.cons = nil
		return
	}
	if unfence(d.Msg, r.name) {
		if n := r.fenced.Add(-1); n < 0 {
			r.fenced.CompareAndSwap(n, 0) // sent by an earlier load of the task
		}
		r.caught.wake()
	}
	l := newLease()
	if r.inflight != nil {
		if v := r.inflight.Begin(d); v.Skip || v.DeadLetter != "" {
			if v.Skip || r.deadLetter(d, v.DeadLetter, v.Details) {
				r.inflight.End(false)
				l.done()
				r.pending = append(r.pending, pendingAck{d: d, l: l})
			}
			return
		}
	}
	r.cur = l
	start := time.Now()
	var passed uint64
	if r.handle(d.Msg, nil) {
		passed = 1
	}
	r.account(1, passed, start)
	r.cur = nil
	if r.inflight != nil {
		r.inflight.End(true)
	}
	l.done()
	r.pending = append(r.pending, pendingAck{d: d, l: l})
}

// deadLetter moves d to the dead-letter queue instead of handling it (its
// InFlight said so): it is counted as a failed message and reported. It
// reports whether d went there. The dead-letter queue is retried until
// the task stops; then d is not acknowledged and the task takes nothing
// more, so no later acknowledgement covers d: it comes again to the next
// owner (nothing is lost).
func (r *runner) deadLetter(d *transit.Delivery, reason string, details map[string]any) bool {
	text, _ := message.Marshal(d.Msg)
	if err := d.DeadLetter(r.ctx, reason, details); err != nil {
		r.h.out("error", r.name, fmt.Sprintf("task %s: dead-lettering a message failed, it stays on the bus: %v", r.name, err), nil)
		r.paused.Store(true)
		return false
	}
	r.failed.Add(1)
	r.h.out("error", r.name, fmt.Sprintf("task %s: message moved to the dead-letter queue without handling it: %s", r.name, reason),
		map[string]any{"message": string(text)})
	return true
}

func (r *runner) ackPending() {
	if len(r.pending) == 0 {
		return
	}
	// Only the deliveries whose in-process consequences are all handled,
	// in delivery order (an acknowledgement covers the earlier ones too).
	n := 0
	for n < len(r.pending) && r.pending[n].l.free() {
		n++
	}
	if n == 0 {
		return
	}
	// What they published must be on the bus before they are
	// acknowledged; the task's own context may be ending, so the flush
	// gets its own deadline.
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := r.h.flushAsync(fctx)
	cancel()
	if err != nil {
		// Not acknowledged: the bus delivers them again to the next owner.
		r.dropPending(len(r.pending))
		return
	}
	for _, p := range r.pending[:n] {
		if err := p.d.Ack(); err != nil {
			r.log.Warn("ack failed; the message may be delivered again", "error", err)
		}
	}
	r.dropPending(n)
}

func (r *runner) dropPending(n int) {
	rest := copy(r.pending, r.pending[n:])
	clear(r.pending[rest:])
	r.pending = r.pending[:rest]
}

// tryFlip ends the catch-up when nothing of this queue is left on the bus:
// with senders held off, every earlier send of this process is flushed to
// the bus and acknowledged there, and the queue is empty — so local
// delivery from now on cannot overtake anything.
func (r *runner) tryFlip() bool {
	r.ackPending()
	r.gate.Lock()
	defer r.gate.Unlock()
	// Sends that started before this task was hosted may still be on
	// their way to the bus: wait for them (they hold no gate), briefly.
	out := r.h.outsideCounter(r.name)
	for i := 0; out.Load() > 0; i++ {
		if i >= 200 {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
	// The mailbox takes sends again (also direct Transit sends, which do
	// not pass the gate) only once they are all flushed to the bus too.
	caught := r.local.EndBehindBus(func() bool {
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		defer cancel()
		if err := r.h.tr.Flush(ctx); err != nil {
			return false
		}
		st, err := r.h.tr.Stat(ctx, r.name)
		if err != nil {
			return false
		}
		if backlog := st.Msgs + int64(len(r.busC)); backlog > 0 {
			r.pauseSenders(backlog)
			return false
		}
		return true
	})
	if !caught {
		return false
	}
	r.catchingUp.Store(false)
	r.pauseUntil.Store(0)
	r.caught.wake()
	return true
}

// flipPause is how long senders in this process hold back (see
// Host.waitCatchUp) so that a task's short bus backlog can run out and
// the catch-up end; at most once per flipPauseEvery, since other
// processes may keep the backlog from ever running out.
const (
	flipPause      = 100 * time.Millisecond
	flipPauseEvery = time.Second
)

// pauseSenders holds this process' senders back for flipPause when the
// backlog is short (a mailbox's worth at most) and some of it is theirs:
// senders as fast as the task would otherwise keep it on the bus path
// for good, each of their messages taking the place of the one handled.
func (r *runner) pauseSenders(backlog int64) {
	now := time.Now().UnixNano()
	if backlog > int64(r.h.opts.MailboxSize) || r.fenced.Load() == 0 || now < r.nextPause {
		return
	}
	r.pauseUntil.Store(now + int64(flipPause))
	r.nextPause = now + int64(flipPauseEvery)
}

// fenceKey marks (in .ipc_transit_meta) a message this process sent
// through the bus only because its target was catching up.
const fenceKey = "mm_fence"

// fence makes msg go to qname through the bus (an override).
func fence(msg message.Message, qname string) {
	meta := msg.EnsureMeta()
	ov, _ := meta["overrides"].(map[string]any)
	if ov == nil {
		ov = map[string]any{}
		meta["overrides"] = ov
	}
	fnl, _ := ov["force_non_local"].(map[string]any)
	if fnl == nil {
		fnl = map[string]any{}
		ov["force_non_local"] = fnl
	}
	fnl[qname] = true
	meta[fenceKey] = qname
}

// unfence removes what fence added, so the task sees the message as
// sent, and reports whether msg was fenced for qname.
func unfence(msg message.Message, qname string) bool {
	meta := msg.Meta()
	if meta == nil || meta[fenceKey] != qname {
		return false
	}
	delete(meta, fenceKey)
	ov, _ := meta["overrides"].(map[string]any)
	if fnl, ok := ov["force_non_local"].(map[string]any); ok {
		delete(fnl, qname)
		if len(fnl) == 0 {
			delete(ov, "force_non_local")
		}
	}
	if ov != nil && len(ov) == 0 {
		delete(meta, "overrides")
	}
	return true
}

// account counts n messages taken since start, passed of which went to
// the task's handler (the others were state transforms), and the time
// spent on them.
func (r *runner) account(n, passed uint64, start time.Time) {
	took := time.Since(start)
	r.handlerNanos.Add(uint64(took))
	if n > 0 {
		r.cost = nextCost(r.cost, took/time.Duration(n))
	}
	if passed > 0 {
		r.passed.Add(passed)
	}
	r.handled.Add(n)
	if r.pider != nil {
		r.coPID.Store(int64(r.pider.PID()))
	}
	r.touched()
}

// nextCost is the moving average of a task's time per message (for
// tryInline) after a message (or a batch) that took per each. One message
// that took long because the thread was preempted or the collector stopped
// the world says nothing about the task's handler: each counts at most
// twice the inline bound, so that a hiccup does not send the next bursts
// through the mailboxes (without the bound, one 1 ms stall kept the Router
// from being inlined for the next few dozen messages: p99 at 820 k msgs/s
// 0.95–1.15 ms, with it 0.77–0.98 ms), while a handler that is slow every
// time still ends above it.
func nextCost(cost, per time.Duration) time.Duration {
	return cost + (min(per, 2*inlineCostMax)-cost)/8
}

// handle delivers one message to the task, or applies a state transform;
// it reports whether the task's handler got it. l is the lease the
// message carried in the mailbox (nil: none); it is let go once the
// message is handled. The caller accounts for it (account).
func (r *runner) handle(m message.Message, l *lease) bool {
	if l != nil {
		// A local message caused by a bus message: what this handling
		// sends carries the same lease.
		prev := r.cur
		r.cur = l
		defer func() { r.cur = prev; l.done() }()
	}
	if ctl, ok := m[".multimodule"].(map[string]any); ok {
		if t, ok := ctl["transform"].(map[string]any); ok {
			r.transformState(t)
			return false
		}
	}
	r.in, r.gaveAway = m, false
	err := r.safeCall("message", func() error { return r.t.Message(r.tc, m) })
	r.in = nil
	if err != nil {
		r.failed.Add(1)
		text := "(sent on by the handler, not shown)"
		if !r.gaveAway {
			// The handler kept the message: nobody else can be changing it.
			b, _ := message.Marshal(m)
			text = string(b)
		}
		r.h.out("error", r.name, fmt.Sprintf("task %s: message handler failed: %v", r.name, err),
			map[string]any{"message": text})
	}
	return true
}

// sent notes that the handler sent msg on: if it is the message being
// handled, its new owner may be changing it from now on.
func (r *runner) sent(msg message.Message) {
	if r.in != nil && !r.gaveAway && sameMap(msg, r.in) {
		r.gaveAway = true
	}
}

// transformState applies an operator's {".multimodule": {"transform": …}}
// to the task's state.
func (r *runner) transformState(t map[string]any) {
	state := r.tc.State()
	if err := transform.Apply(message.Message(state), t, nil); err != nil {
		r.h.out("error", r.name, fmt.Sprintf("task %s: state transform: %v", r.name, err), nil)
	}
	r.tc.SetState(state)
	r.h.out("log", r.name, fmt.Sprintf("task %s: state transformed", r.name), nil)
}

// safeCall runs task code, turning a panic into an error with the stack.
func (r *runner) safeCall(what string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s panicked: %v\n%s", what, p, debug.Stack())
		}
	}()
	return f()
}

// applyConfig calls SetConfig when the config changed by content. Its
// verdict goes to the ConfigureAll that waits for it (configReport); once
// the task accepted a config, it handles nothing more until the config is
// saved.
func (r *runner) applyConfig(cfg map[string]any) {
	key := configKey(cfg)
	if r.configured && key == r.configKey {
		if saved, _ := r.h.configReport(r.name, key, true); saved != nil {
			<-saved
		}
		return
	}
	prev, prevKey := r.config, r.configKey
	r.config, r.configKey = cfg, key
	if c, ok := r.t.(task.Configurer); ok {
		err := r.safeCall("set_config", func() error { return c.SetConfig(r.tc, registry.CopyConfig(cfg)) })
		if err != nil {
			r.config, r.configKey = prev, prevKey
			r.rejected(key, err)
			return
		}
	}
	defer func() {
		if saved, _ := r.h.configReport(r.name, key, true); saved != nil {
			<-saved
		}
	}()
	if !r.configured {
		cs, ok := r.t.(canonicalSender)
		r.canonical = ok && cs.SendsCanonical()
		ih, ok := r.t.(task.Inliner)
		r.inline.Store(ok && ih.HandlesInline())
	}
	r.configured = true
	if r.pider != nil {
		r.coPID.Store(int64(r.pider.PID()))
	}
	r.touched()
}

// rejected reports a config the task refused. A task that runs with an
// accepted config keeps it, and its saved config file is made to hold it
// again: a config its task could not try before it was saved (one sent
// while the task ran elsewhere, or was still loading) may be there. A
// task that has none stays unconfigured, its messages waiting, and says
// so on the alert channel: it waits for a config it accepts; its file
// gets back the config it held before, if the rejected one was saved
// before the task could try it.
func (r *runner) rejected(key string, err error) {
	// Reported before the verdict: whoever waits for it (a control
	// message's acknowledgement) comes after the report.
	if r.configured {
		r.h.out("error", r.name, fmt.Sprintf("task %s: set config rejected, keeping the previous one: %v", r.name, err), nil)
	} else {
		r.h.out("alert", r.name, fmt.Sprintf("task %s: config rejected; the task has no config it accepts and waits, its messages waiting, for a new one: %v", r.name, err), nil)
	}
	_, prev := r.h.configReport(r.name, key, false)
	back := prev
	if r.configured {
		back = r.config
	}
	if back == nil || r.placement != HostAndConsume {
		return // a local copy's config is its own process's
	}
	if err := r.h.opts.Store.SaveConfigs(map[string]map[string]any{r.name: back}); err != nil {
		r.h.out("error", r.name, fmt.Sprintf("task %s: putting back the saved config it runs with: %v", r.name, err), nil)
	}
}

func (r *runner) saveInterval() time.Duration {
	if d, ok := registry.IntervalOverride(r.config, "save_state"); ok {
		return d
	}
	return r.h.opts.SaveInterval
}

// touched notes that task code ran, so a stateful task's state may have
// changed: it is saved (if it did change) within the save interval. The
// timer is armed only then, so an idle task has none.
func (r *runner) touched() {
	if r.saveTimer != nil || !r.def.Stateful || !r.configured || r.closed {
		return
	}
	r.saveTimer = time.AfterFunc(r.saveInterval(), func() {
		r.post(func() {
			r.saveTimer = nil
			r.saveState(false)
		})
	})
}

// saveState snapshots the state and hands it to the saver when it
// changed since the last save; with wait, it always saves and returns once
// written.
func (r *runner) saveState(wait bool) {
	if !r.def.Stateful {
		return
	}
	state := r.tc.State()
	b, err := message.Marshal(message.Message(state))
	if err != nil {
		r.h.out("error", r.name, fmt.Sprintf("task %s: state is not JSON-compatible, not saved: %v", r.name, err), nil)
		return
	}
	// A final save (wait) always writes, and only returns once written:
	// an earlier periodic save may still be queued, and the next owner of
	// the task (another process, after a move) reads the file at once.
	if !wait && string(b) == string(r.lastSaved) {
		return
	}
	r.lastSaved = b
	job := saveJob{task: r.name, state: message.Message(state).Copy()}
	if wait {
		job.done = make(chan struct{})
	}
	r.h.saveCh <- job
	if wait {
		<-job.done
	}
}

// --- task.Runtime ---

func (r *runner) Context() context.Context { return r.ctx }
func (r *runner) Config() map[string]any   { return r.config }
func (r *runner) Logger() *slog.Logger     { return r.log }
func (r *runner) Process() string          { return r.h.opts.Process }

func (r *runner) Emit(msg message.Message) error {
	r.emitted.Add(1)
	r.sent(msg)
	return r.h.deliverLeased(r.ctx, RouterName, "", msg, r, r.cur, r.canonical)
}

func (r *runner) Send(qname, destination string, msg message.Message) error {
	r.sent(msg)
	return r.h.deliverLeased(r.ctx, qname, destination, msg, r, r.cur, r.canonical)
}

// canonicalSender is a task that promises that every message it emits or
// sends holds only canonical values (package message), so its sends skip
// the check (transit.SendOptions.Canonical). The built-in Router does: it
// only passes on the messages it received, changed by compiled
// transforms, whose values are canonical.
type canonicalSender interface {
	SendsCanonical() bool
}

func (r *runner) Out(channel, text string, details map[string]any) {
	r.h.out(channel, r.name, text, details)
}

func (r *runner) Recur(name string, interval time.Duration, work func(*task.Context)) {
	if interval <= 0 {
		r.h.out("error", r.name, fmt.Sprintf("task %s: recur %q: interval must be positive, got %v", r.name, name, interval), nil)
		return
	}
	if old, ok := r.recurs[name]; ok {
		old.work = work
		if old.interval == interval {
			return
		}
		old.stopped.Store(true)
		old.timer.Stop()
	}
	rc := &recur{name: name, interval: interval, work: work}
	r.recurs[name] = rc
	r.armRecur(rc)
}

func (r *runner) armRecur(rc *recur) {
	rc.timer = time.AfterFunc(rc.interval, func() {
		if rc.stopped.Load() || !rc.pending.CompareAndSwap(false, true) {
			return
		}
		r.post(func() {
			rc.pending.Store(false)
			if rc.stopped.Load() || r.closed {
				return
			}
			r.armRecur(rc) // next period starts now: runs never pile up
			if !r.configured || r.paused.Load() {
				return
			}
			if err := r.safeCall("recur "+rc.name, func() error { rc.work(r.tc); return nil }); err != nil {
				r.failed.Add(1)
				r.h.out("error", r.name, fmt.Sprintf("task %s: recurring work %q failed: %v", r.name, rc.name, err), nil)
			}
			r.touched()
		})
	})
}

func (r *runner) StopRecur(name string) {
	if rc, ok := r.recurs[name]; ok {
		rc.stopped.Store(true)
		rc.timer.Stop()
		delete(r.recurs, name)
	}
}

func (r *runner) StopRecurs() { r.stopRecurs() }

func (r *runner) stopRecurs() {
	for name := range r.recurs {
		r.StopRecur(name)
	}
}

var _ task.Runtime = (*runner)(nil)

// wakeGate lets goroutines wait for a change made by another: a waiter
// takes the channel (wait), then looks at what it waits for, then waits
// on the channel; wake closes it. A change made between the look and the
// wait is not missed.
type wakeGate struct {
	mu sync.Mutex
	ch chan struct{}
}

func (g *wakeGate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
	return g.ch
}

func (g *wakeGate) wake() {
	g.mu.Lock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
	g.mu.Unlock()
}
