package transit

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/multimodule/multimodule/message"
)

// InProcess is the side of a [Transit] that only a process running tasks
// needs (package host): it hosts queues in this process' memory
// ([Local]), sends into them with the host's delivery policies
// ([HostSendOptions]), and lets the owner of a queue take the queue's bus
// backlog before sends go into memory. A bus client (a command, a test,
// another program) needs none of it: [Transit.Send], [Transit.Receive],
// [Transit.Consume], [Transit.Stat] and [Transit.Flush] serve it, and
// reach the queues hosted here as well.
//
// Get it with [Transit.InProcess]. It is a small value (a pointer), safe
// for concurrent use as the Transit is.
type InProcess struct{ t *Transit }

// InProcess returns t's in-process side, for the host.
func (t *Transit) InProcess() InProcess { return InProcess{t} }

// HostSendOptions modify one send through [InProcess.Send].
type HostSendOptions struct {
	SendOptions
	// Overflow makes a send to a full local queue put the message in
	// beyond the queue's capacity instead of waiting for room. A host uses
	// it when the queue's receiver is itself waiting, directly or through
	// others, for room in a queue of the sender (a routing cycle): waiting
	// would never end. The bus ignores it.
	Overflow bool
	// BusOnly skips a queue hosted in this process and sends through the
	// bus. A host uses it for sends that must not overtake the bus backlog
	// of a task it is still loading (whose local queue already exists).
	BusOnly bool
	// Canonical promises that msg holds only the canonical types of
	// package message, as a message received from a queue does (also
	// after changes made only with canonical values, such as the Router's
	// transforms): the check a send otherwise makes, a walk over the
	// whole message, is skipped. Broken, the promise delivers values the
	// receiver may not expect.
	Canonical bool
	// Local, when set, is the queue's Local (as Host or HostBehindBus
	// returned it), which the send then need not look up by name. The
	// caller makes sure it is not unhosted meanwhile (a host holds its
	// own lock against that); a send to a Local that was unhosted goes
	// to the bus, as a send by name to a queue no longer hosted here. It
	// is ignored for sends to another host or with BusOnly.
	Local *Local
	// MsgID, when set, is the message's ID on the bus (Nats-Msg-Id)
	// instead of one of its own: the bus stores a message with an ID it
	// stored within its duplicate window (2 minutes) only once. A host
	// derives it from the bus delivery whose handling sends the message,
	// so that a handling done again sends the same IDs. A message with
	// an ID goes out alone, never in a batch with others. Ignored for a
	// queue hosted in this process.
	MsgID string
}

// Host starts hosting queue qname in this process with room for capacity
// messages (at least 1). Sends from this process to qname then go to the
// returned Local. It fails if qname is already hosted here.
func (p InProcess) Host(qname string, capacity int) (*Local, error) {
	return p.t.hostLocal(qname, capacity, false)
}

// HostBehindBus is Host for an owner that first takes the queue's bus
// backlog: until [InProcess.EndBehindBus] succeeds, sends from this
// process to qname go on through the bus, behind that backlog, so that
// none overtakes an older message of the queue.
func (p InProcess) HostBehindBus(qname string, capacity int) (*Local, error) {
	return p.t.hostLocal(qname, capacity, true)
}

// EndBehindBus ends the bus-first sending of l, a queue hosted with
// HostBehindBus, if caught reports true. caught runs while no send to the
// queue is between seeing it behind the bus and having its publish on its
// way: it is where the owner flushes this process' publishes and checks
// that the bus backlog is gone. It reports false, without calling caught,
// while such a send is in progress (one waiting for room in a full bus
// queue can take long; the owner tries again later). Once it returned
// true, sends go into l.
func (InProcess) EndBehindBus(l *Local, caught func() bool) bool {
	return l.endBehindBus(caught)
}

// Unhost stops local delivery to qname: later sends go to the bus, the
// Local's Ready channel is closed, and the messages still waiting are
// returned in order, with their tags ([InProcess.Send]): tags[i] belongs
// to msgs[i]; tags is nil when none of them has one. The caller usually
// sends them on to the bus or to the next owner. A sender that was
// waiting for room goes to the bus. It returns nil, nil if qname is not
// hosted here.
func (p InProcess) Unhost(qname string) (msgs []message.Message, tags []any) {
	t := p.t
	t.mu.Lock()
	cur := *t.locals.Load()
	l := cur[qname]
	if l != nil {
		next := maps.Clone(cur)
		delete(next, qname)
		t.locals.Store(&next)
	}
	t.mu.Unlock()
	if l == nil {
		return nil, nil
	}
	return l.unhost()
}

// Send is [Transit.SendAsync] with the host's options, for a message that
// carries tag, a value of the caller's (nil: none). When the message goes
// into a queue hosted in this process, tag goes with it, in the same slot
// of the queue, and the queue's receiver gets it beside the message
// ([Local.Drain], [InProcess.Unhost]), whatever the send did to the
// message (a copy in canonical types, see HostSendOptions.Canonical);
// local reports that. A message that goes to the bus, or is refused,
// leaves tag with the caller (local false).
func (p InProcess) Send(ctx context.Context, qname string, msg message.Message, tag any, opts HostSendOptions) (local bool, err error) {
	return p.t.send(ctx, qname, msg, tag, opts, false)
}

// Prepare does for msg what a Send to qname, a queue hosted in this
// process, does before putting it into the queue: it checks the message
// (unless canonical, as HostSendOptions.Canonical) and records send_ts,
// the wall time of now, a [MonoNow] reading the caller just took (a host
// times the handler from the same reading). It is for a caller that
// hands the message to the queue's consumer itself (a host running the
// consumer's handler on the sender's goroutine). local is false when the
// message's overrides send it through the bus; the caller then uses Send
// (which stamps it again). m is the message to deliver: msg itself, or
// its canonical copy.
func (p InProcess) Prepare(qname string, msg message.Message, canonical bool, now time.Duration) (m message.Message, local bool, err error) {
	t := p.t
	if t.closed.Load() {
		return nil, false, fmt.Errorf("transit: send to %q: %w", qname, ErrClosed)
	}
	ts := sendTS(t.clock.unixNanoAt(now))
	m, overrides := msg, false
	if canonical && m != nil {
		overrides = stamp(m, ts)
	} else if m, overrides, err = normalize(msg, ts); err != nil {
		return nil, false, fmt.Errorf("transit: send to %q: %w", qname, err)
	}
	return m, !overrides || m.LocalityFor(qname) != message.LocalityNonLocal, nil
}

func (t *Transit) hostLocal(qname string, capacity int, behindBus bool) (*Local, error) {
	if err := ValidateQueueName(qname); err != nil {
		return nil, err
	}
	if capacity < 1 {
		capacity = 1
	}
	if t.closed.Load() {
		return nil, fmt.Errorf("transit: host local queue %q: %w", qname, ErrClosed)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.locals.Load()
	if _, ok := cur[qname]; ok {
		return nil, fmt.Errorf("transit: host local queue %q: already hosted in this process", qname)
	}
	l := newLocal(qname, capacity)
	l.behindBus.Store(behindBus)
	next := maps.Clone(cur)
	next[qname] = l
	t.locals.Store(&next)
	return l, nil
}
