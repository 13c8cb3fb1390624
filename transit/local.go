package transit

import (
	"context"
	"fmt"
	"sync"

	"github.com/multimodule/multimodule/message"
)

// Local is a bounded in-memory queue for a task hosted in this process.
// Senders in this process push messages into it without serializing them;
// the hosting goroutine receives from [Local.C].
type Local struct {
	name string
	ch   chan message.Message

	// mu guards closed against senders: a sender holds the read lock from
	// its check of closed until it has stopped touching ch, so UnhostLocal
	// (write lock) knows when no sender is inside.
	mu     sync.RWMutex
	closed bool
	done   chan struct{} // closed by unhost; wakes senders waiting for room
}

func newLocal(name string, capacity int) *Local {
	return &Local{name: name, ch: make(chan message.Message, capacity), done: make(chan struct{})}
}

// Name returns the queue name.
func (l *Local) Name() string { return l.name }

// C returns the receiving side of the queue. It is closed by
// [Transit.UnhostLocal] after the waiting messages were taken out, so a
// receiving goroutine sees the end of local delivery as a closed channel.
func (l *Local) C() <-chan message.Message { return l.ch }

// Len returns the number of waiting messages.
func (l *Local) Len() int { return len(l.ch) }

// Cap returns the queue's capacity in messages.
func (l *Local) Cap() int { return cap(l.ch) }

// push delivers msg. It returns handled=false when the queue was unhosted
// before the message went in (the caller then uses the bus).
func (l *Local) push(ctx context.Context, msg message.Message, nonBlocking bool) (handled bool, err error) {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return false, nil
	}
	select {
	case l.ch <- msg:
		l.mu.RUnlock()
		return true, nil
	default:
	}
	defer l.mu.RUnlock()
	if nonBlocking {
		return true, fmt.Errorf("transit: send to local queue %q (%d waiting): %w", l.name, cap(l.ch), ErrFull)
	}
	select {
	case l.ch <- msg:
		return true, nil
	case <-l.done:
		return false, nil
	case <-ctx.Done():
		return true, fmt.Errorf("transit: send to local queue %q: waiting for room: %w (%w)", l.name, ErrFull, ctx.Err())
	}
}

// unhost stops local delivery and returns the waiting messages in order.
func (l *Local) unhost() []message.Message {
	// Wake senders waiting for room before taking the write lock, so they
	// drop their read locks.
	l.mu.RLock()
	already := l.closed
	l.mu.RUnlock()
	if already {
		return nil
	}
	l.closeDone()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var out []message.Message
	for {
		select {
		case m := <-l.ch:
			out = append(out, m)
		default:
			close(l.ch)
			return out
		}
	}
}

var doneMu sync.Mutex

func (l *Local) closeDone() {
	doneMu.Lock()
	defer doneMu.Unlock()
	select {
	case <-l.done:
	default:
		close(l.done)
	}
}
