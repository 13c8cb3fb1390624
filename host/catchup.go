package host

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/multimodule/multimodule/message"
)

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
	if !r.h.outsideCounter(r.name).waitNone(outsideWait) {
		return false
	}
	// The mailbox takes sends again (also direct Transit sends, which do
	// not pass the gate) only once they are all flushed to the bus too.
	caught := r.h.tr.InProcess().EndBehindBus(r.local, func() bool {
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

// outsideWait bounds how long tryFlip waits, holding every sender of the
// task back, for sends that were on their way to the bus when it began;
// when they take longer, the catch-up goes on and it tries again later.
const outsideWait = 10 * time.Millisecond

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
