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
	m, local, err := h.tr.InProcess().Prepare(r.name, msg, s.canonical)
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
	prev := r.cur
	r.cur = s.lease // what the handler sends carries the sender's lease
	start := monoNow()
	var passed uint64
	if r.handle(m, nil) {
		passed = 1
	}
	r.inlineRun = prevRun
	r.account(1, passed, start)
	if f := inlinedHook.Load(); f != nil {
		(*f)(r)
	}
	if from != nil {
		from.inlineRun++
	}
	r.cur = prev
	r.exec.Unlock()
	return nil
}
