package host

import (
	"sync/atomic"
	"unsafe"

	"github.com/multimodule/multimodule/message"
)

// A lease ties a message taken from the bus to everything its handling
// sent to tasks in this process (and what those sent, and so on). The bus
// message is acknowledged only once its lease is free: every in-memory
// descendant has been handled (and what they published, flushed). So a
// crash of this process between "handled" and "its results left the
// process" makes the bus deliver the message again instead of losing its
// results (at least once).
//
// A message that goes into a local mailbox carries its lease in the
// mailbox slot beside it (transit.InProcess.Send), not in a table
// keyed by the message: the send may put a copy in the mailbox (a message
// with values that are not canonical, such as a Go int, is normalised into
// a new map), and a table keyed by the map's address would never find the
// lease again.
type lease struct{ n atomic.Int64 }

func newLease() *lease {
	l := &lease{}
	l.n.Store(1) // the handling of the bus message itself
	return l
}

func (l *lease) done()      { l.n.Add(-1) }
func (l *lease) free() bool { return l.n.Load() <= 0 }
func (l *lease) hold()      { l.n.Add(1) }

// leaseOf returns the lease a mailbox tag holds (nil: none).
func leaseOf(tag any) *lease {
	l, _ := tag.(*lease)
	return l
}

// sameMap reports whether a and b are the same map (not maps with equal
// contents). A map value is a pointer to the runtime's map: comparing
// those needs neither reflection nor a walk.
func sameMap(a, b message.Message) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}

type pendingAck struct {
	d interface{ Ack() error }
	l *lease
}
