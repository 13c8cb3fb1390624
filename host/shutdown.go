package host

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"
)

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
