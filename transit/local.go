package transit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/multimodule/multimodule/message"
)

// Local is a bounded in-memory queue for a task hosted in this process.
// Senders in this process push messages into it without serializing them;
// one receiving goroutine takes them out in batches with [Local.Drain] and
// sleeps on [Local.Ready] when it found the queue empty. A host makes one
// with [InProcess.Host].
//
// It is a ring buffer under a mutex, not a Go channel: a send is an
// append under a lock nobody holds for long, and the receiver is woken
// (one token in a 1-slot channel) only when it said it would sleep (its
// last Drain found nothing), not once per message. A busy receiver takes
// what piled up since its last Drain in one go, so under load senders and
// receiver do not hand each message over through a shared channel lock
// and a goroutine wake-up.
type Local struct {
	name string

	mu      sync.Mutex
	limit   int               // capacity: senders wait above it (unless Overflow)
	ring    []message.Message // len(ring) >= limit; grows only for Overflow sends
	tags    []any             // tags[i]: ring[i]'s tag (InProcess.Send); made at the first tagged send
	head    int               // index of the oldest message
	n       int               // messages waiting
	closed  bool              // unhosted: senders go to the bus
	waiting bool              // the receiver's last Drain found nothing: signal ready
	room    chan struct{}     // non-nil while senders wait for room; closed when room appears

	ready chan struct{} // 1 slot; closed by unhost
	done  chan struct{} // closed by unhost; wakes senders waiting for room

	// behindBus: sends go through the bus (InProcess.HostBehindBus). A send
	// that saw it holds busMu shared until its publish is on its way, so
	// that endBehindBus (exclusive) sees every such publish in the
	// backlog it checks.
	behindBus atomic.Bool
	busMu     sync.RWMutex
}

func newLocal(name string, capacity int) *Local {
	return &Local{
		name:    name,
		limit:   capacity,
		ring:    make([]message.Message, capacity),
		waiting: true, // nobody drained yet: the first message wakes the receiver
		ready:   make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// holdBehindBus reports whether sends still go through the bus; if so,
// busMu is held shared, and the caller lets go of it once its publish is
// on its way.
func (l *Local) holdBehindBus() bool {
	l.busMu.RLock()
	if l.behindBus.Load() {
		return true
	}
	l.busMu.RUnlock()
	return false
}

// endBehindBus is InProcess.EndBehindBus.
func (l *Local) endBehindBus(caught func() bool) bool {
	if !l.behindBus.Load() {
		return true
	}
	if !l.busMu.TryLock() {
		return false
	}
	defer l.busMu.Unlock()
	if !caught() {
		return false
	}
	l.behindBus.Store(false)
	return true
}

// Ready returns a channel that receives a value when messages may be
// waiting after a [Local.Drain] found none, and is closed once the queue
// is unhosted ([InProcess.Unhost]). A wake-up can be spurious (Drain
// then finds nothing again); none is lost: after a Drain that returned 0,
// the next message sent signals Ready.
func (l *Local) Ready() <-chan struct{} { return l.ready }

// Drain moves up to len(buf) waiting messages into buf, oldest first, and
// returns how many; with tags non-nil (at least as long as buf) it moves
// the tag of each message ([InProcess.Send]) into tags too: tags[i]
// belongs to buf[i], nil for a message sent without one (with tags nil,
// the tags are dropped). ok is false when the queue has been unhosted
// (its waiting messages went to the caller of [InProcess.Unhost]); then
// n is 0. Only one goroutine may receive from a Local (Drain is not safe
// for concurrent use with itself).
func (l *Local) Drain(buf []message.Message, tags []any) (n int, ok bool) {
	if tags != nil {
		tags = tags[:len(buf)]
	}
	return l.drain(buf, tags)
}

func (l *Local) drain(buf []message.Message, tags []any) (n int, ok bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, false
	}
	n = min(len(buf), l.n)
	if n == 0 {
		l.waiting = true
		l.mu.Unlock()
		return 0, true
	}
	first := copy(buf[:n], l.ring[l.head:min(l.head+n, len(l.ring))])
	clear(l.ring[l.head : l.head+first])
	if first < n {
		copy(buf[first:n], l.ring[:n-first])
		clear(l.ring[:n-first])
	}
	switch {
	case l.tags != nil:
		if tags != nil {
			copy(tags[:first], l.tags[l.head:l.head+first])
			copy(tags[first:n], l.tags[:n-first])
		}
		clear(l.tags[l.head : l.head+first])
		clear(l.tags[:n-first])
	case tags != nil:
		clear(tags[:n])
	}
	l.head += n
	if l.head >= len(l.ring) {
		l.head -= len(l.ring)
	}
	l.n -= n
	l.waiting = false
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
	l.mu.Unlock()
	return n, true
}

// Len returns the number of waiting messages.
func (l *Local) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Cap returns the queue's capacity in messages.
func (l *Local) Cap() int { return l.limit }

// push delivers msg, with tag (nil: none). It returns handled=false when
// the queue was unhosted before the message went in (the caller then uses
// the bus). With overflow it never waits: a full queue takes msg beyond
// its capacity.
func (l *Local) push(ctx context.Context, msg message.Message, tag any, nonBlocking, overflow bool) (handled bool, err error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return false, nil
		}
		if overflow && l.n == len(l.ring) {
			l.grow()
		}
		if l.n < l.limit || (overflow && l.n < len(l.ring)) {
			i := l.head + l.n
			if i >= len(l.ring) {
				i -= len(l.ring)
			}
			l.ring[i] = msg
			if tag != nil && l.tags == nil {
				l.tags = make([]any, len(l.ring))
			}
			if l.tags != nil {
				l.tags[i] = tag
			}
			l.n++
			woke := false
			if l.waiting {
				// Under the lock: unhost closes ready.
				l.waiting = false
				select {
				case l.ready <- struct{}{}:
					woke = true
				default: // a token is there already
				}
			}
			l.mu.Unlock()
			if woke {
				nudge()
			}
			return true, nil
		}
		if nonBlocking {
			waiting := l.n
			l.mu.Unlock()
			return true, fmt.Errorf("transit: send to local queue %q (%d waiting): %w", l.name, waiting, ErrFull)
		}
		if l.room == nil {
			l.room = make(chan struct{})
		}
		room := l.room
		l.mu.Unlock()
		select {
		case <-room:
		case <-l.done:
			return false, nil
		case <-ctx.Done():
			return true, fmt.Errorf("transit: send to local queue %q: waiting for room: %w (%w)", l.name, ErrFull, ctx.Err())
		}
	}
}

// grow doubles the ring, keeping the waiting messages in order; l.mu held.
func (l *Local) grow() {
	ring := make([]message.Message, 2*max(len(l.ring), 1))
	var tags []any
	if l.tags != nil {
		tags = make([]any, len(ring))
	}
	for i := range l.n {
		j := (l.head + i) % len(l.ring)
		ring[i] = l.ring[j]
		if tags != nil {
			tags[i] = l.tags[j]
		}
	}
	l.ring, l.tags, l.head = ring, tags, 0
}

// unhost stops local delivery and returns the waiting messages in order,
// and their tags (nil when none of them has one). Senders that come
// later, or were waiting for room, get handled=false from push (they go
// to the bus); a receiver sleeping on Ready wakes up and its next Drain
// reports the end.
func (l *Local) unhost() (out []message.Message, tags []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil
	}
	l.closed = true
	if l.n > 0 {
		out = make([]message.Message, l.n)
		if l.tags != nil {
			tags = make([]any, l.n)
		}
		for i := range out {
			j := (l.head + i) % len(l.ring)
			out[i], l.ring[j] = l.ring[j], nil
			if tags != nil {
				tags[i], l.tags[j] = l.tags[j], nil
			}
		}
	}
	l.n, l.head = 0, 0
	close(l.done)
	close(l.ready)
	return out, tags
}

// nudge moves a goroutine just woken by this one (it sits in the
// scheduler's "run next" slot of this goroutine's P) to that P's run
// queue, by starting an empty goroutine, which takes the slot. An idle P
// steals from a run queue at once, but from the "run next" slot only
// after a few microseconds' sleep (runtime.runqgrab), which the kernel's
// timer slack and waking an idle virtual CPU stretch to ~70 µs or more;
// meanwhile the woken receiver waits for its waker to block. Once per
// wake-up (the receiver then drains a batch), not per message.
func nudge() { go func() {}() }
