package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/transit"
)

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
		busC = r.busC
		r.endBus()
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
	var (
		cons *transit.Consumer
		gone <-chan struct{}
	)
	r.call(func() { cons, gone = r.cons, r.busGone })
	if cons == nil {
		return
	}
	cons.Stop()
	// An unconfigured task takes nothing from the bus (and never becomes
	// unconfigured again): nothing it fetched waits to be handled.
	var drained bool
	if r.call(func() { drained = r.busC == nil || !r.configured }) && !drained {
		select {
		case <-gone: // the loop handled every fetched delivery (endBus)
		case <-r.done:
			return
		}
	}
	h.ackHandled(r)
}

// ackHandled acknowledges what the runner handled, once what it caused
// here is handled too (bounded: what stays unacknowledged is delivered
// again).
func (h *Host) ackHandled(r *runner) {
	r.ackWaiters.Add(1)
	defer r.ackWaiters.Add(-1)
	limit := time.NewTimer(ackHandledWait)
	defer limit.Stop()
	for {
		wake := r.acked.wait()
		left := 0
		if !r.call(func() { r.ackPending(); left = len(r.pending) }) || left == 0 {
			return
		}
		// The runner's loop tries again every few milliseconds while
		// acknowledgements wait (runner.loop's ackRetry).
		select {
		case <-wake:
		case <-limit.C:
			return
		case <-r.done:
			return
		}
	}
}

// ackHandledWait bounds how long an unload waits for the consequences of
// the task's handled bus messages to be handled in this process; what is
// still unacknowledged then is delivered again to the task's next owner.
const ackHandledWait = 2 * time.Second

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
	leftovers, tags := h.tr.InProcess().Unhost(r.name)
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
				h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: close: %v", r.name, err), nil)
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
