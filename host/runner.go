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
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
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
	inline atomic.Bool
	// waitingOn is the task whose full mailbox this task's goroutine waits
	// on to send (nil: none), for the cycle check of Host.sendInto.
	waitingOn   atomic.Pointer[runner]
	cycleWarned atomic.Int64 // unix ns of the last routing-cycle warning

	passed, emitted, failed, handlerNanos *atomic.Uint64
	// handlerLE are the handler latency histogram's bucket counters
	// (HandlerBuckets, then the overflow).
	handlerLE [len(HandlerBuckets) + 1]*atomic.Uint64
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
	// acked wakes Host.ackHandled (ackWaiters of them wait) when pending
	// acknowledgements were done or dropped.
	acked      wakeGate
	ackWaiters atomic.Int32
	// coPID is the pid of the task's co-process (exec tasks), for the
	// monitor; 0 when it has none.
	coPID atomic.Int64
	pider PIDReporter
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
	busGone    chan struct{}               // closed once busC is done with (endBus)
	inflight   InFlight                    // Options.InFlight for the task of an external process; nil otherwise
	batch      [localBatch]message.Message // taken from the mailbox, being handled
	batchTags  [localBatch]any             // their leases (mailbox tags), nil for none
	cost       time.Duration               // moving average of the time taken per message (see inlineCostMax)
	inlineRun  int                         // messages this turn handed to other tasks inline (inlinePerTurn)
	// root is the task whose goroutine runs this task's code now: the
	// task itself on its own goroutine (loop), the emitter's root while
	// it is handled inline (tryInline).
	root *runner
	// acct (root only) adds up the messages tasks handled inline on this
	// goroutine during its turn (addInline), until flushInline.
	acct []inlineAcct
	// lastDest is the last queue this task sent to (Host.hostedTask).
	lastDest  destCache
	nextPause int64        // unix ns: pauseSenders may hold senders back again from then
	pending   []pendingAck // handled, waiting for the ack (in delivery order)
	canonical bool         // the task is a CanonicalSender
	cur       *lease       // the lease of the message being handled
	inHand    InHand       // the message being handled
	recurs    map[string]*recur
	lastSaved []byte
	saveTimer *time.Timer
	closed    bool
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

// post hands f to the task goroutine to run. It returns false when the
// runner has stopped; a post that races with the stop can still return
// true, and then f may never run (call, which waits for f, also watches
// r.done).
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

// woke says what ended the wait of a runner's loop; the loop does the
// work it brought once it holds r.exec again.
type woke int

const (
	wokeToLook woke = iota // the mailbox has messages, or a retry is due: the loop looks again
	wokeCtrl               // control work came (r.ctrl): run it
	wokeBus                // a bus delivery came, or the consumer stopped: take it
	wokeStop               // the task's context ended: acknowledge what is handled, and stop
)

func (r *runner) loop() {
	defer close(r.done)
	// exec is held whenever this goroutine runs the task or touches its
	// state; it is let go only while waiting in the select below, where
	// an emitter may take it to handle a message inline (tryInline).
	r.exec.Lock()
	defer r.exec.Unlock()
	r.root = r
	for {
		// A turn ended: what it handled inline is counted.
		r.flushInline()
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
			what = wokeToLook
		)
		r.exec.Unlock()
		select {
		case f = <-r.ctrl:
			what = wokeCtrl
		case <-readyC:
		case d, ok = <-busC:
			what = wokeBus
		case <-retryFlip:
		case <-ackRetry:
		case <-r.ctx.Done():
			what = wokeStop
		}
		r.exec.Lock()
		switch what {
		case wokeCtrl:
			f()
		case wokeBus:
			r.takeBus(d, ok)
		case wokeStop:
			r.flushInline()
			r.ackPending()
			return
		}
	}
}

// takeLocal handles the messages waiting in the mailbox, at most
// localBatch of them, and reports whether there were any, and whether the
// mailbox is still hosted. The batch is timed and counted as a whole: two
// clock reads and three counter updates per batch, not per message.
func (r *runner) takeLocal() (took, open bool) {
	n, open := r.local.Drain(r.batch[:], r.batchTags[:])
	if n == 0 {
		return false, open
	}
	start := monoNow()
	var passed uint64
	at, _ := r.t.(AheadTaker)
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

// announce tells at about the run of batch messages from i that its
// handler gets (up to a state transform, which handle applies itself),
// when there are several, and returns the index after the run.
func (r *runner) announce(at AheadTaker, i, n int) int {
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

// endBus forgets the task's bus consumer, stopped, once its channel is
// done with, and tells whoever waits for that (busGone).
func (r *runner) endBus() {
	if r.busC != nil {
		close(r.busGone)
	}
	r.busC, r.cons = nil, nil
}

func (r *runner) takeBus(d *transit.Delivery, ok bool) {
	if !ok {
		// The consumer was stopped (the task is being unloaded). A
		// catch-up stays on: messages this process sent through the bus
		// and the consumer did not fetch are still there, so later sends
		// must follow them there, not overtake them in the mailbox.
		r.endBus()
		return
	}
	if unfence(d.Msg, r.name) {
		if n := r.fenced.Add(-1); n < 0 {
			r.fenced.CompareAndSwap(n, 0) // sent by an earlier load of the task
		}
		r.caught.wake()
	}
	l := newBusLease(r, d)
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
	start := monoNow()
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
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: dead-lettering a message failed, it stays on the bus: %v", r.name, err), nil)
		r.paused.Store(true)
		return false
	}
	r.failed.Add(1)
	r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: message moved to the dead-letter queue without handling it: %s", r.name, reason),
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
	if r.ackWaiters.Load() > 0 {
		r.acked.wake()
	}
}

// account counts n messages taken since start, passed of which went to
// the task's handler (the others were state transforms), and the time
// spent on them.
func (r *runner) account(n, passed uint64, start time.Duration) {
	took := monoNow() - start
	if n > 0 {
		r.cost = nextCost(r.cost, took/time.Duration(n))
	}
	r.count(n, passed, took)
}

// count adds n messages, passed of which went to the task's handler, and
// took, the time spent on them, to the task's counters. A batch's
// messages each count at its mean time: one bucket index and one atomic
// add per batch.
func (r *runner) count(n, passed uint64, took time.Duration) {
	r.handlerNanos.Add(uint64(max(took, 0)))
	if n > 0 {
		r.handlerLE[handlerBucket(took/time.Duration(n))].Add(n)
	}
	if passed > 0 {
		r.passed.Add(passed)
	}
	r.handled.Add(n)
	r.noteHandled()
}

// noteHandled notes that the task handled messages: its co-process' pid
// for the monitor, and its state's save (touched).
func (r *runner) noteHandled() {
	if r.pider != nil {
		r.coPID.Store(int64(r.pider.PID()))
	}
	r.touched()
}

// monoNow is the monotonic clock, for timing handlers: one clock read,
// where time.Now reads the wall clock as well (each read is ≈ 30 ns on the
// standard machine, and the inline path times every message). A reading
// also stamps send_ts (transit.InProcess.Prepare).
func monoNow() time.Duration { return transit.MonoNow() }

// nextCost is the moving average of a task's time per message (for
// tryInline) after a message (or a batch) that took per each. One message
// that took long because the thread was preempted or the collector stopped
// the world says nothing about the task's handler: each counts at most
// twice the inline bound, so that a hiccup does not send the next bursts
// through the mailboxes (without the bound, one 1 ms stall would keep the
// Router from being inlined for the next few dozen messages, which shows
// in the p99 latency under load), while a handler that is slow every time
// still ends above it.
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
	r.inHand.Take(m)
	defer r.inHand.Drop()
	err := r.safeCall("message", func() error { return r.t.Message(r.tc, m) })
	if err != nil {
		r.failed.Add(1)
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: message handler failed: %v", r.name, err),
			map[string]any{"message": r.inHand.Text()})
	}
	return true
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
