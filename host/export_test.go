package host

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// inlinedCounts: *runner → *atomic.Uint64, while CountInlined counts.
var inlinedCounts sync.Map

// CountInlined makes Inlined count, until restore, the messages each
// task handles inline.
func CountInlined() (restore func()) {
	f := func(r *runner) {
		c, ok := inlinedCounts.Load(r)
		if !ok {
			c, _ = inlinedCounts.LoadOrStore(r, new(atomic.Uint64))
		}
		c.(*atomic.Uint64).Add(1)
	}
	inlinedHook.Store(&f)
	return func() {
		inlinedHook.Store(nil)
		inlinedCounts.Clear()
	}
}

// Inlined returns how many messages to task name were handled inline on
// their sender's goroutine (tryInline) since CountInlined, or 0 when it is
// not loaded.
func (h *Host) Inlined(name string) uint64 {
	if r := (*h.hosted.Load())[name]; r != nil {
		if c, ok := inlinedCounts.Load(r); ok {
			return c.(*atomic.Uint64).Load()
		}
	}
	return 0
}

// SetInlineCostMax sets inlineCostMax and returns a function that
// restores it.
func SetInlineCostMax(d time.Duration) (restore func()) {
	old := inlineCostMax
	inlineCostMax = d
	return func() { inlineCostMax = old }
}

// FlushAsync is flushAsync: it waits until everything this host sent
// with SendAsync before the call is stored by the bus.
func (h *Host) FlushAsync(ctx context.Context) error { return h.flushAsync(ctx) }

// Flushing reports whether a flushAsync call is waiting for the bus.
func (h *Host) Flushing() bool { return len(h.flushSem) > 0 }

// HandlerBucket is handlerBucket, for tests.
func HandlerBucket(d time.Duration) int { return handlerBucket(d) }

// LoopWakes returns how often the run loop woke up so far.
func (h *Host) LoopWakes() uint64 { return h.loopWakes.Load() }

// FlushPending reports whether a bus send waits for a flush.
func (h *Host) FlushPending() bool { return h.asyncFlushed.Load() < h.asyncSent.Load() }
