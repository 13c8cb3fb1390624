package host

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
)

// inlineCostMax: emitters handle a message inline (tryInline) only while
// the task's recent messages took less than this each. Inline saves a
// hand-over (waking the task's goroutine, which on 2 cores costs tens of
// microseconds of latency) but moves the work onto the emitter's core:
// for a short handler (routing to one queue: ≈ 0.5 µs) that is the better
// deal; a long one (many routes, copies for several forwards) should run
// on a core of its own, in parallel with its emitters.
var inlineCostMax = 2 * time.Microsecond

// inlinedHook, set only by tests (export_test.go), sees each message a
// task handles inline.
var inlinedHook atomic.Pointer[func(r *runner)]

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
// older and is handled first, here. Otherwise msg goes to r as
// sendHosted sends it.
//
// r.gate is held (shared) by the caller, and tryInline lets go of it on
// every path: before the handler runs, so that the handler's own sends
// (perhaps to r) do not take it again, or once msg is sent. err is the
// send's error (the message was refused).
func (h *Host) tryInline(ctx context.Context, r *runner, msg message.Message, s sender) error {
	from := s.from
	if from != nil && from.inlineRun >= inlinePerTurn {
		return h.sendHostedRelease(ctx, r, msg, s)
	}
	if !r.exec.TryLock() {
		return h.sendHostedRelease(ctx, r, msg, s)
	}
	if !r.configured || r.closed || r.cost >= inlineCostMax || r.paused.Load() || r.catchingUp.Load() ||
		r.ctx.Err() != nil || len(r.busC) > 0 || len(r.ctrl) > 0 {
		r.exec.Unlock()
		return h.sendHostedRelease(ctx, r, msg, s)
	}
	// One clock read stamps the message and starts the handler's timing.
	start := monoNow()
	m, local, err := h.tr.InProcess().Prepare(r.name, msg, s.canonical, start)
	if err != nil || !local {
		r.exec.Unlock()
		if err != nil {
			r.gate.RUnlock()
			return err
		}
		return h.sendHostedRelease(ctx, r, msg, s)
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
	prev, prevRoot := r.cur, r.root
	r.cur = s.lease // what the handler sends carries the sender's lease
	var root *runner
	if from != nil {
		root = from.root
	}
	r.root = root // what r handles inline in turn is counted there too
	var passed uint64
	if r.handle(m, nil) {
		passed = 1
	}
	took := monoNow() - start
	r.inlineRun = prevRun
	r.cost = nextCost(r.cost, took)
	if root != nil {
		root.addInline(r, passed, took)
		r.noteHandled()
	} else {
		r.count(1, passed, took)
	}
	if f := inlinedHook.Load(); f != nil {
		(*f)(r)
	}
	if from != nil {
		from.inlineRun++
	}
	r.cur, r.root = prev, prevRoot
	r.exec.Unlock()
	return nil
}

// inlineFlushEvery bounds how many inline handlings of one task a turn
// adds up before it adds them to the task's counters.
const inlineFlushEvery = localBatch

// inlineAcct is what the handlings of task r inline, on the goroutine of
// the task that holds it (runner.acct), added up to since they were last
// added to r's counters: the messages, those its handler got, the time
// spent, and the handler latency histogram's buckets. Counting per turn
// instead of per message keeps the counters' cache lines, which the
// task's own goroutine and other emitters write too, from moving between
// cores for every message.
type inlineAcct struct {
	r         *runner
	n, passed uint64
	nanos     uint64
	le        [len(HandlerBuckets) + 1]uint32
}

// addInline counts one message task r handled inline on root's goroutine
// (root runs its own task there), passed: whether r's handler got it;
// took: the time it took. The counts reach r's counters every
// inlineFlushEvery messages, and when root's turn ends (flushInline).
func (root *runner) addInline(r *runner, passed uint64, took time.Duration) {
	var a *inlineAcct
	for i := range root.acct {
		if root.acct[i].r == r {
			a = &root.acct[i]
			break
		}
	}
	if a == nil {
		root.acct = append(root.acct, inlineAcct{r: r})
		a = &root.acct[len(root.acct)-1]
	}
	a.n++
	a.passed += passed
	a.nanos += uint64(max(took, 0))
	a.le[handlerBucket(took)]++
	if a.n >= inlineFlushEvery {
		a.flush()
	}
}

// flushInline adds what root's goroutine handled inline to the tasks'
// counters; root calls it at the end of every turn.
func (root *runner) flushInline() {
	for i := range root.acct {
		root.acct[i].flush()
	}
	clear(root.acct) // no reference to a task that may be unloaded
	root.acct = root.acct[:0]
}

// flush adds a's counts to a.r's counters and zeroes them.
func (a *inlineAcct) flush() {
	if a.n == 0 {
		return
	}
	r := a.r
	r.handlerNanos.Add(a.nanos)
	for i, c := range a.le {
		if c > 0 {
			r.handlerLE[i].Add(uint64(c))
			a.le[i] = 0
		}
	}
	if a.passed > 0 {
		r.passed.Add(a.passed)
	}
	r.handled.Add(a.n)
	a.n, a.passed, a.nanos = 0, 0, 0
}
