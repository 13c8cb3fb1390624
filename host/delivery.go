package host

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// RouterName is the queue every Emit goes to.
const RouterName = "Router"

// deliver sends msg to queue qname (on host destination, if set): into the
// mailbox of a task hosted here (loading it first when this process should
// host it), or onto the bus.
func (h *Host) deliver(ctx context.Context, qname, destination string, msg message.Message) error {
	return h.deliverFrom(ctx, qname, destination, msg, sender{})
}

// sender describes a send: who sends, and what the message carries. It
// goes by value along a delivery.
type sender struct {
	// from is the sending task (nil: not a task).
	from *runner
	// lease is the lease of the message from is handling (nil: none): a
	// message that stays in this process carries it.
	lease *lease
	// canonical: the sender vouches that the message holds only canonical
	// values (transit.HostSendOptions.Canonical).
	canonical bool
}

// deliverFrom is deliver for a message sent by s.
func (h *Host) deliverFrom(ctx context.Context, qname, destination string, msg message.Message, s sender) error {
	if destination != "" && destination != h.tr.HostName() {
		defer h.sentAsync()
		opts := transit.HostSendOptions{SendOptions: transit.SendOptions{Destination: destination}, Canonical: s.canonical}
		if destination == ClusterScope {
			opts.MsgID = s.lease.clusterMsgID(s.from)
		}
		_, err := h.tr.InProcess().Send(ctx, qname, msg, nil, opts)
		return err
	}
	if r := h.hostedTask(qname, s.from); r != nil {
		if done, err := h.sendToHosted(ctx, r, msg, s); done {
			return err
		}
	}
	// Slow path. Announce it before looking again, so that a task that
	// becomes hosted meanwhile does not switch to local delivery while
	// this send is still on its way to the bus (see runner.tryFlip).
	out := h.outsideCounter(qname)
	out.n.Add(1)
	announced := true
	unannounce := func() {
		if announced {
			announced = false
			out.leave()
		}
	}
	defer unannounce()
	r := (*h.hosted.Load())[qname]
	if r == nil {
		r, _ = h.ensureLoaded(qname, false, noWait)
	}
	if r != nil {
		unannounce()
		if done, err := h.sendToHosted(ctx, r, msg, s); done {
			return err
		}
	}
	// Not hosted here, or being loaded: through the bus even if the task's
	// mailbox exists already, so this cannot overtake its bus backlog.
	// A placed task's queue is in the cluster scope.
	defer h.sentAsync()
	if h.placed(qname) {
		_, err := h.tr.InProcess().Send(ctx, qname, msg, nil, transit.HostSendOptions{SendOptions: transit.SendOptions{Destination: ClusterScope}, Canonical: s.canonical, MsgID: s.lease.clusterMsgID(s.from)})
		return err
	}
	_, err := h.tr.InProcess().Send(ctx, qname, msg, nil, transit.HostSendOptions{BusOnly: true, Canonical: s.canonical})
	return err
}

// hostedTask returns the task hosted here under qname (nil: none). A
// sending task remembers its last answer for as long as the set of
// hosted tasks stays the same (the same copy-on-write map), so that a
// task sending to one queue over and over (every Emit goes to the
// Router) looks it up once.
func (h *Host) hostedTask(qname string, from *runner) *runner {
	hosted := h.hosted.Load()
	if from == nil {
		return (*hosted)[qname]
	}
	if c := &from.lastDest; c.hosted == hosted && c.qname == qname {
		return c.r
	}
	r := (*hosted)[qname]
	from.lastDest = destCache{hosted: hosted, qname: qname, r: r}
	return r
}

// destCache is a sending task's last hostedTask answer.
type destCache struct {
	hosted *map[string]*runner
	qname  string
	r      *runner
}

// placed reports whether task qname's config places it (IsPlaced). Asked
// on the way to the bus only, never for a task hosted here.
func (h *Host) placed(qname string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return IsPlaced(h.configs[qname])
}

// sendToHosted sends msg to r, a task hosted here, once r lets senders
// through (waitCatchUp): under r.gate, handled inline (tryInline) or into
// r's mailbox (sendHosted). done false: r was unhosted meanwhile and
// nothing was sent; the caller sends through the bus.
func (h *Host) sendToHosted(ctx context.Context, r *runner, msg message.Message, s sender) (done bool, err error) {
	if err := h.waitCatchUp(ctx, r, s.from); err != nil {
		return true, err
	}
	r.gate.RLock()
	if r.unhosted {
		r.gate.RUnlock()
		return false, nil
	}
	if r.inline.Load() {
		return true, h.tryInline(ctx, r, msg, s) // lets go of r.gate
	}
	err = h.sendHosted(ctx, r, msg, s)
	r.gate.RUnlock()
	return true, err
}

// sendHostedRelease is sendHosted, then lets go of r.gate (held shared by
// the caller).
func (h *Host) sendHostedRelease(ctx context.Context, r *runner, msg message.Message, s sender) error {
	err := h.sendHosted(ctx, r, msg, s)
	r.gate.RUnlock()
	return err
}

// outsideCounter counts the sends to qname in progress on the slow path
// (not holding any task's gate).
func (h *Host) outsideCounter(qname string) *outsideSends {
	if c, ok := h.outside.Load(qname); ok {
		return c.(*outsideSends)
	}
	c, _ := h.outside.LoadOrStore(qname, new(outsideSends))
	return c.(*outsideSends)
}

// outsideSends counts the sends to one queue in progress on the slow path,
// and wakes runner.tryFlip, waiting for them to end, once none is left.
type outsideSends struct {
	n       atomic.Int64
	waiting atomic.Int32 // waitNone calls in progress
	none    wakeGate
}

// leave notes the end of a send n counted.
func (o *outsideSends) leave() {
	if o.n.Add(-1) == 0 && o.waiting.Load() > 0 {
		o.none.wake()
	}
}

// waitNone waits until no send is in progress, at most limit, and reports
// whether none is.
func (o *outsideSends) waitNone(limit time.Duration) bool {
	if o.n.Load() <= 0 {
		return true
	}
	o.waiting.Add(1)
	defer o.waiting.Add(-1)
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		wake := o.none.wait()
		if o.n.Load() <= 0 {
			return true
		}
		select {
		case <-wake:
		case <-t.C:
			return o.n.Load() <= 0
		}
	}
}

// sendHosted delivers to a task hosted here: into its mailbox, or — while
// it catches up with its bus backlog — through the bus. r.gate is held.
func (h *Host) sendHosted(ctx context.Context, r *runner, msg message.Message, s sender) error {
	l := s.lease
	fenced := r.catchingUp.Load()
	var tag any
	switch {
	case fenced:
		fence(msg, r.name)
		defer h.sentAsync() // through the bus
		r.fenced.Add(1)
	case msg.LocalityFor(r.name) == message.LocalityNonLocal:
		defer h.sentAsync() // forced through the bus by its overrides
	case l != nil:
		// Into the mailbox: the lease goes with it, in its slot. Held
		// before the send, since r may handle it before the send returns.
		l.hold()
		tag = l
	}
	// r.local is the queue's mailbox while r.gate is held and r is hosted.
	local, err := h.sendInto(ctx, r, msg, s.from, tag, transit.HostSendOptions{Canonical: s.canonical, Local: r.local})
	if err != nil && fenced {
		r.fenced.Add(-1)
	}
	if tag != nil && !local {
		// Refused, or on the bus after all (counted, so that the flush
		// before the lease's acknowledgement covers it): nothing here
		// carries the lease.
		if err == nil {
			h.sentAsync()
		}
		l.done()
	}
	return err
}

// cycleCheckEvery is how often a task waiting for room in another task's
// mailbox looks for a cycle of waiting tasks.
const cycleCheckEvery = 10 * time.Millisecond

// sendInto sends msg into hosted task r's mailbox for task from (nil: not
// from a task). A full mailbox makes the sender wait for room, as
// backpressure — except when r waits itself, directly or through other
// tasks, for room in from's mailbox: with routes that go round (A →
// Router → B → Router, a task sending to itself) every task of the cycle
// would wait forever, the daemon's shutdown too. Then the message goes in
// beyond r's capacity (transit.HostSendOptions.Overflow), a warning says so
// (at most every 10 s per task), and the cycle moves on; order is kept (it
// is the same mailbox). A chain without a cycle keeps its backpressure.
// tag goes into the mailbox with the message (transit.InProcess.Send);
// local reports that it did.
func (h *Host) sendInto(ctx context.Context, r *runner, msg message.Message, from *runner, tag any, opts transit.HostSendOptions) (local bool, err error) {
	if from == nil {
		return h.tr.InProcess().Send(ctx, r.name, msg, tag, opts)
	}
	try := opts
	try.NonBlocking = true
	local, err = h.tr.InProcess().Send(ctx, r.name, msg, tag, try)
	if !errors.Is(err, transit.ErrFull) {
		return local, err
	}
	if from.root != nil {
		// The wait may be long: what the turn handled inline so far is
		// counted first.
		from.root.flushInline()
	}
	from.waitingOn.Store(r)
	defer from.waitingOn.Store(nil)
	for {
		if waitsFor(r, from) {
			if now := time.Now().UnixNano(); now-from.cycleWarned.Load() > int64(10*time.Second) {
				from.cycleWarned.Store(now)
				h.log.Warn("tasks wait for room in each other's full mailboxes (a routing cycle): delivering beyond capacity instead of waiting forever",
					"task", from.name, "to", r.name)
			}
			over := opts
			over.Overflow = true
			return h.tr.InProcess().Send(ctx, r.name, msg, tag, over)
		}
		wctx, cancel := context.WithTimeout(ctx, cycleCheckEvery)
		local, err = h.tr.InProcess().Send(wctx, r.name, msg, tag, opts)
		cancel()
		if err == nil || !errors.Is(err, transit.ErrFull) || ctx.Err() != nil {
			return local, err
		}
	}
}

// waitsFor reports whether r is from, or waits (through the tasks it
// waits on) for room in from's mailbox.
func waitsFor(r, from *runner) bool {
	for range 64 {
		if r == nil {
			return false
		}
		if r == from {
			return true
		}
		r = r.waitingOn.Load()
	}
	return false
}

// Send delivers msg to queue qname from the framework (control, out of
// band, tests) exactly as a task's send would.
func (h *Host) Send(ctx context.Context, qname string, msg message.Message) error {
	return h.deliver(ctx, qname, "", msg)
}

// SendTo delivers msg to queue qname on host destination ("": as Send)
// from the framework, exactly as a task's SendTo would: the runner of
// placed tasks sends through it. With a Lease, what msg causes in this
// process (the tasks here it reaches, inline or through their
// mailboxes, and what they send on) holds the lease until it is handled;
// call Flush once the lease is free, before acknowledging the bus
// messages whose handling sent it.
func (h *Host) SendTo(ctx context.Context, qname, destination string, msg message.Message, l *Lease) error {
	s := sender{}
	if l != nil {
		s.lease = &l.l
	}
	return h.deliverFrom(ctx, qname, destination, msg, s)
}

// A Lease follows what the handling of bus messages outside a Host (a
// placed task's) causes in this process: held once by its creator, and
// once more by every message sent with it (SendTo) that stays in this
// process, until that message is handled. Free reports when all of it is
// done, after its creator called Done.
type Lease struct{ l lease }

// NewLease returns a Lease held by its creator.
func NewLease() *Lease {
	l := &Lease{}
	l.l.n.Store(1)
	return l
}

// Done lets go of the creator's hold. Call it once.
func (l *Lease) Done() { l.l.done() }

// Free reports whether the creator let go and every message sent with
// the lease that stayed in this process is handled.
func (l *Lease) Free() bool { return l.l.free() }
