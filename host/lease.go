package host

import (
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/multimodule/multimodule/transit"
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
//
// A lease also names the bus delivery it follows (its origin), so that
// what the handling sends into the cluster scope gets message IDs derived
// from it (clusterMsgID): a handling done again after the delivery came
// again (a queue taken over from its ack floor) sends the same IDs, and
// the bus stores those messages once.
type lease struct {
	n     atomic.Int64
	sends atomic.Uint32     // sends into the cluster scope so far (clusterMsgID)
	by    *runner           // origin: the task whose bus queue delivered it (nil: none)
	d     *transit.Delivery // origin: the delivery
}

func newLease() *lease {
	l := &lease{}
	l.n.Store(1) // the handling of the bus message itself
	return l
}

// newBusLease returns the lease of delivery d of r's bus queue.
func newBusLease(r *runner, d *transit.Delivery) *lease {
	l := newLease()
	l.by, l.d = r, d
	return l
}

// clusterMsgID returns the message ID of the next send into the cluster
// scope that the handling l follows makes: the delivery's scope, queue,
// stream sequence, place in its bus message and time stored (a stream
// deleted and created again numbers from 1 again), and the send's index
// among these sends. Only the task that took the delivery from its bus
// queue sends with such IDs, in its handler's order: the tasks of this
// process that the handling reaches (through mailboxes or inline) may
// interleave their sends differently when the delivery is handled again,
// and a handling cut short the first time and then done again in another
// order would have a message dropped as another's copy. "" (the bus
// chooses one per send): no origin, no lease, or from is not the task
// that took the delivery.
func (l *lease) clusterMsgID(from *runner) string {
	if l == nil || l.d == nil || from != l.by {
		return ""
	}
	i := l.sends.Add(1) - 1
	scope := l.by.h.tr.HostName()
	var sb strings.Builder
	sb.Grow(len(scope) + len(l.by.name) + 40)
	sb.WriteString(scope)
	sb.WriteByte(':')
	sb.WriteString(l.by.name)
	var num [20]byte
	for _, v := range [...]uint64{l.d.Seq, uint64(l.d.Member()), uint64(l.d.Stored()), uint64(i)} {
		sb.WriteByte(':')
		sb.Write(strconv.AppendUint(num[:0], v, 36))
	}
	return sb.String()
}

func (l *lease) done()      { l.n.Add(-1) }
func (l *lease) free() bool { return l.n.Load() <= 0 }
func (l *lease) hold()      { l.n.Add(1) }

// leaseOf returns the lease a mailbox tag holds (nil: none).
func leaseOf(tag any) *lease {
	l, _ := tag.(*lease)
	return l
}

type pendingAck struct {
	d interface{ Ack() error }
	l *lease
}
