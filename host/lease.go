package host

import (
	"reflect"
	"sync/atomic"

	"github.com/multimodule/multimodule/message"
)

// A lease ties a message taken from the bus to everything its handling
// sent to tasks in this process (and what those sent, and so on). The bus
// message is acknowledged only once its lease is free: every in-memory
// descendant has been handled (and what they published, flushed). So a
// crash of this process between "handled" and "its results left the
// process" makes the bus deliver the message again instead of losing its
// results (at least once, SPEC 6).
type lease struct{ n atomic.Int64 }

func newLease() *lease {
	l := &lease{}
	l.n.Store(1) // the handling of the bus message itself
	return l
}

func (l *lease) done()      { l.n.Add(-1) }
func (l *lease) free() bool { return l.n.Load() <= 0 }
func (l *lease) hold()      { l.n.Add(1) }
func msgKey(m message.Message) uintptr {
	return uintptr(reflect.ValueOf(map[string]any(m)).UnsafePointer())
}

// attach records that msg, about to go into a local mailbox, carries l.
func (h *Host) attach(msg message.Message, l *lease) {
	if l == nil {
		return
	}
	l.hold()
	h.leased.Add(1)
	h.leases.Store(msgKey(msg), l)
}

// detach takes the lease msg carries, if any (when it is handled, moved
// to the bus, or could not be delivered).
func (h *Host) detach(msg message.Message) *lease {
	if h.leased.Load() == 0 {
		return nil // the common case (no bus message in flight here): free
	}
	if v, ok := h.leases.LoadAndDelete(msgKey(msg)); ok {
		h.leased.Add(-1)
		return v.(*lease)
	}
	return nil
}

type pendingAck struct {
	d interface{ Ack() error }
	l *lease
}
