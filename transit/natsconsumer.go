package transit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsConsumer feeds one queue's deliveries to its owner. Its run loop
// owns the pull requests (see pull.go) and the queue of pulled messages;
// Ack (called by the owner) and the loop share the list of
// unacknowledged deliveries.
type natsConsumer struct {
	b            *natsBus
	cons         jetstream.Consumer
	scope, qname string
	out          chan *Delivery
	stopCtx      context.Context // ends: fetch no more
	stopFn       context.CancelFunc
	queued       atomic.Int64  // fetched, not yet handed out
	acked        chan struct{} // a delivery was acknowledged (for dead-lettering and keep-alives)

	in       chan *nats.Msg // the inbox: pulled messages and the requests' status messages
	sub      *nats.Subscription
	inbox    string // requests reply to inbox.<n>
	nextSubj string // the consumer's pull API subject

	mu        sync.Mutex
	exited    bool        // the run loop ended: acknowledgements go out one by one, confirmed
	highest   uint64      // highest acknowledged stream sequence
	highestD  *Delivery   // the delivery acknowledged with it (confirmed again by resync)
	pend      []*Delivery // handed out or queued, not acknowledged, in order
	lastAck   *Delivery   // acknowledged by the owner, acknowledgement not sent yet
	unsent    int
	replayEnd uint64 // deliveries up to here are acknowledged one by one, synchronously
	// A bus message whose first doneN queue messages are handled and the
	// rest not yet (batches); recorded for the next owner when this one
	// stops in the middle of it (see writeDone).
	doneSeq   uint64
	doneN     int
	doneDirty bool
	doneArmed bool
	doneMu    sync.Mutex // serializes writeDone

	// lastDelivered is the consumer sequence of the last delivery the
	// run loop received, set when it ends (recordCleanStops).
	lastDelivered uint64

	// run loop only
	seq       seqWatch
	resyncing bool   // take the queue over again (see resync)
	resyncWhy string // for the log
}

func (b *natsBus) consume(ctx context.Context, scope, qname string) (*Consumer, error) {
	cons, err := b.queueConsumer(ctx, scope, qname)
	if err != nil {
		return nil, err
	}
	if err := b.leaveReceive(ctx, scope, qname); err != nil {
		return nil, err
	}
	tk, err := b.takeOver(ctx, scope, cons, false)
	if err != nil {
		return nil, err
	}
	c := &natsConsumer{
		b: b, cons: cons, scope: scope, qname: qname,
		out:       make(chan *Delivery, fetchBatch),
		acked:     make(chan struct{}, 1),
		replayEnd: tk.replayEnd,
		in:        make(chan *nats.Msg, inCap),
		inbox:     b.nc.NewInbox(),
		nextSubj:  fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.%s.%s", b.streamName(scope), consumerName(qname)),
	}
	c.sub, err = b.nc.ChanSubscribe(c.inbox+".*", c.in)
	if err != nil {
		return nil, fmt.Errorf("transit: consume %q: subscribe: %w", qname, err)
	}
	c.seq.start(tk)
	c.stopCtx, c.stopFn = context.WithCancel(b.ctx)
	stopAfter := context.AfterFunc(ctx, c.stopFn)
	wait := pullWait
	b.consumers.Add(1)
	go func() {
		defer b.consumers.Done()
		defer stopAfter()
		c.run(tk, wait)
	}()
	return &Consumer{ch: c.out, stop: c.stopFn}, nil
}

// run pulls and hands out messages until stopped, then hands out what
// was pulled and closes out. The bus closing (b.ctx) aborts at once.
//
// At most one pull request is meant to be alive at the bus: the next is
// sent once it ended (a status message: expired, conflict, …) or brought
// all it asked for, and while fewer than fetchBatch/2 messages wait here.
// One that neither ends nor brings anything until well after its expiry,
// or that was sent before the connection was restored, is presumed lost
// and asked again; if it was not lost after all, its messages come to
// the same inbox and are counted against the new one, so at most two
// are alive. Nothing the bus delivered is dropped while the loop runs.
// An idle queue wakes the loop once per pullWait; the keep-alive timer
// runs only while deliveries are unacknowledged.
func (c *natsConsumer) run(tk takeover, wait time.Duration) {
	log := c.b.log.With("queue", c.qname)
	defer close(c.out)
	defer c.finish()
	defer func() { _ = c.sub.Unsubscribe() }()
	keepEvery := max(c.b.opts.AckWait/3, 10*time.Millisecond)
	keep := time.NewTimer(keepEvery)
	keep.Stop()
	keeping := false
	lost := time.NewTimer(time.Hour)
	lost.Stop()
	defer keep.Stop()
	defer lost.Stop()
	var (
		queue  []*Delivery
		reqN   int  // number of the current request (its reply subject)
		active bool // the current request is alive
		left   int  // messages it may still bring
		retry  <-chan time.Time
		dlDone chan error // head is being dead-lettered: its outcome
		// After a reconnect, the take-over waits for the owner's
		// acknowledgements until resyncBy, then goes ahead anyway.
		resyncBy     <-chan time.Time
		resyncAnyway bool
		reconn       = *c.b.reconnected.Load()
		body         = pullRequest(fetchBatch, wait)
	)
	request := func() {
		reqN++
		reply := c.inbox + "." + strconv.Itoa(reqN)
		if err := c.b.nc.PublishRequest(c.nextSubj, reply, body); err != nil {
			if c.stopCtx.Err() == nil {
				log.Warn("pull from the bus failed; retrying", "err", err)
			}
			retry = time.After(250 * time.Millisecond)
			return
		}
		active, left = true, fetchBatch
		lost.Reset(wait + pullGrace)
	}
	// take handles one message from the inbox.
	take := func(m *nats.Msg) {
		if st := pullStatus(m); st != "" {
			if st == "100" || m.Subject != c.inbox+"."+strconv.Itoa(reqN) {
				return // a heartbeat, or the end of a request presumed lost
			}
			active = false
			lost.Stop()
			switch st {
			case "408", "404":
			default:
				// 409 (consumer deleted, leadership change, too many
				// requests), 503 (no JetStream yet): not at once.
				if c.stopCtx.Err() == nil {
					log.Warn("pull request refused by the bus; retrying", "status", st, "description", m.Header.Get("Description"))
				}
				retry = time.After(250 * time.Millisecond)
			}
			return
		}
		if active {
			if left--; left <= 0 {
				active = false
				lost.Stop()
			}
		}
		bm := &busMsg{m: m, nc: c.b.nc}
		if c.resyncing || dropped(c.qname, bm) {
			return // not handed out: after the reset it comes again, in order
		}
		if gap, want, got := c.seq.saw(bm); gap {
			// Deliveries the bus counts as handed out never reached
			// this consumer (lost with a connection, or a pull request
			// a stopped owner left behind was served).
			log.Warn("deliveries from the bus never reached this consumer; taking the queue over again once what was handed out is acknowledged",
				"want_consumer_seq", want, "got", got)
			c.resyncing, c.resyncWhy = true, "a delivery never arrived"
			return
		}
		queue = append(queue, c.unpack(bm, &tk)...)
		c.queued.Store(int64(len(queue)))
		if !keeping {
			// Deliveries wait for their acknowledgement: keep them alive
			// until none does (checked when the timer fires).
			keeping = true
			keep.Reset(keepEvery)
		}
	}
	drained := false
	for {
		stopping := c.stopCtx.Err() != nil
		if c.resyncing && len(queue) == 0 && retry == nil && !stopping && (c.allHandled() || resyncAnyway) {
			if err := c.resync(); err != nil {
				log.Warn("taking the queue over again failed; retrying", "err", err)
				retry = time.After(250 * time.Millisecond)
			} else {
				// The old requests went with the old inbox.
				c.resyncing, active = false, false
				resyncBy, resyncAnyway = nil, false
				lost.Stop()
			}
		}
		if stopping && !drained {
			// What already reached the inbox was fetched: it is handed
			// out too. Nothing later is taken in.
			drained = true
			for more := true; more; {
				select {
				case m := <-c.in:
					take(m)
				default:
					more = false
				}
			}
		}
		if !active && retry == nil && !c.resyncing && !stopping && len(queue) < fetchBatch/2 {
			request()
		}
		if stopping && len(queue) == 0 {
			return
		}
		var (
			outc chan *Delivery
			head *Delivery
		)
		if len(queue) > 0 {
			head = queue[0]
			if head.dead != "" {
				if dlDone == nil && c.onlyUnacked(head) {
					// Dead-lettered on the side (it waits when the
					// dead-letter queue has no room), while this loop
					// goes on taking deliveries in and keeping them, and
					// head, in progress.
					dlDone = make(chan error, 1)
					c.b.consumers.Add(1)
					go func(d *Delivery, done chan<- error) {
						defer c.b.consumers.Done()
						done <- c.b.deadLetter(c.b.ctx, c.stopCtx.Done(), c.scope, c.qname, d, nil)
					}(head, dlDone)
				}
			} else {
				outc = c.out
			}
		}
		// Once stopped, nothing more is taken in: what still comes is
		// later in the queue than everything handed out, and is delivered
		// again to the next owner.
		var stopped <-chan struct{}
		in := c.in
		if stopping {
			in = nil
		} else {
			stopped = c.stopCtx.Done()
		}
		select {
		case outc <- head:
			queue = queue[1:]
			c.queued.Store(int64(len(queue)))
		case m := <-in:
			take(m)
		case <-lost.C:
			active = false
		case <-reconn:
			// The bus may have died with the request, with deliveries
			// on their way here (it counts them as handed out) and with
			// acknowledgements on their way there. The queue is taken
			// over again at once (resync): once what was handed out is
			// acknowledged, the latest acknowledgement is confirmed and
			// the consumer reset to its ack floor, so whatever never
			// arrived comes again first, in order, and no later
			// acknowledgement (AckAll) covers a delivery never seen.
			// Nothing waits for the bus' AckWait.
			reconn = *c.b.reconnected.Load()
			active = false
			lost.Stop()
			c.resyncing, c.resyncWhy = true, "the connection to the bus was restored"
			if resyncBy == nil {
				resyncBy = time.After(c.b.opts.AckWait + time.Second)
			}
		case <-resyncBy:
			// The owner has still not acknowledged everything handed
			// out: it may have given some deliveries up (a failed flush
			// leaves them to the next owner). Not waiting for them for
			// ever: the bus delivers them again after the reset, and the
			// owner's acknowledgements of older deliveries still count.
			resyncBy, resyncAnyway = nil, true
		case <-retry:
			retry = nil
		case <-keep.C:
			c.keepAlive()
			if keeping = c.hasPending(); keeping {
				keep.Reset(keepEvery)
			}
		case err := <-dlDone:
			dlDone = nil
			if err != nil {
				log.Error("dead-lettering failed; the next owner of the queue takes it again", "err", err)
				return
			}
			c.drop(head)
			queue = queue[1:]
			c.queued.Store(int64(len(queue)))
		case <-c.acked:
		case <-stopped:
		case <-c.b.ctx.Done():
			return
		}
	}
}

// hasPending reports whether deliveries wait for their acknowledgement
// (or one is held back): then the bus is told every AckWait/3 that they
// are in progress.
func (c *natsConsumer) hasPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pend) > 0 || c.lastAck != nil
}

// onlyUnacked reports whether d is the first unacknowledged delivery.
func (c *natsConsumer) onlyUnacked(d *Delivery) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pend) == 0 || c.pend[0] == d
}

// drop removes d (and anything before it) from the pending list: it
// was dead-lettered.
func (c *natsConsumer) drop(d *Delivery) {
	c.mu.Lock()
	c.trim(d)
	c.progress(d)
	c.mu.Unlock()
}

// trim removes d and the deliveries before it from pend; c.mu held.
func (c *natsConsumer) trim(d *Delivery) {
	i := 0
	for i < len(c.pend) && !c.pend[i].after(d) {
		c.pend[i] = nil
		i++
	}
	c.pend = c.pend[i:]
}

// ack records that the owner handled d. The acknowledgement itself (an
// AckAll for everything up to d) goes out at once when nothing else is
// queued for the owner, every ackGroup deliveries under load, and one by
// one (waiting for the bus) for messages a previous owner had in flight.
func (c *natsConsumer) ack(d *Delivery) error {
	c.mu.Lock()
	c.trim(d)
	c.progress(d)
	if !d.isLast() {
		// The bus message is acknowledged with its last queue message.
		// After Stop, record how far this one got, soon.
		if c.exited && !c.doneArmed {
			c.doneArmed = true
			time.AfterFunc(ackDelay, c.writeDone)
		}
		c.mu.Unlock()
		select {
		case c.acked <- struct{}{}:
		default:
		}
		return nil
	}
	if c.lastAck == nil || d.Seq > c.lastAck.Seq {
		c.lastAck = d
	}
	if d.Seq >= c.highest {
		c.highest, c.highestD = d.Seq, d
	}
	c.unsent++
	replay := d.Seq <= c.replayEnd || c.exited
	var send *Delivery
	if replay || c.unsent >= ackGroup || (len(c.out) == 0 && c.queued.Load() == 0) {
		send, c.lastAck, c.unsent = c.lastAck, nil, 0
	} else if c.unsent == 1 {
		// Held back: send it soon even if no further ack comes, so a
		// crash repeats only the last few milliseconds of work.
		time.AfterFunc(ackDelay, c.flushAck)
	}
	c.mu.Unlock()
	select {
	case c.acked <- struct{}{}:
	default:
	}
	if send == nil {
		return nil
	}
	return c.sendAck(send, replay)
}

func (c *natsConsumer) sendAck(d *Delivery, wait bool) error {
	m := d.ref.(jetstream.Msg)
	if ackDropped(c.qname, d.Seq) {
		return nil
	}
	var err error
	if wait {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		err = m.DoubleAck(ctx)
		cancel()
	} else {
		err = m.Ack()
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return fmt.Errorf("transit: acknowledge message %d of %q: %w", d.Seq, c.qname, err)
	}
	return nil
}

// finish ends the run loop: later acknowledgements are sent one by one
// and confirmed, and the ones already sent are confirmed (the consumer's
// ack floor reached them) before C closes, so a next owner's take-over
// cannot overtake them and deliver handled messages again.
func (c *natsConsumer) finish() {
	c.mu.Lock()
	c.exited = true
	pending := len(c.pend) > 0
	c.mu.Unlock()
	if pending && c.seq.known {
		// The owner may still acknowledge them; if not, and this
		// process ends cleanly, that is recorded (recordCleanStops).
		c.lastDelivered = c.seq.next - 1
		c.b.stoppedMu.Lock()
		c.b.stopped = append(c.b.stopped, c)
		c.b.stoppedMu.Unlock()
	}
	c.flushAck()
	if c.b.ctx.Err() != nil {
		return // the Transit is closing: nothing more to wait for
	}
	c.mu.Lock()
	highest := c.highest
	c.mu.Unlock()
	if highest == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.b.ctx, 5*time.Second)
	defer cancel()
	delay := time.Millisecond
	for {
		info, err := c.cons.Info(ctx)
		if err == nil && info.AckFloor.Stream >= highest {
			return
		}
		select {
		case <-ctx.Done():
			c.b.log.Warn("acknowledgements not confirmed by the bus", "queue", c.qname, "seq", highest, "err", err)
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// flushAck sends a held-back acknowledgement (and, after Stop, records
// a partly handled bus message).
func (c *natsConsumer) flushAck() {
	c.mu.Lock()
	send := c.lastAck
	c.lastAck, c.unsent = nil, 0
	c.mu.Unlock()
	if send != nil {
		if err := c.sendAck(send, false); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			c.b.log.Warn("acknowledgement failed", "queue", c.qname, "err", err)
		}
	}
	c.writeDone()
}

func (c *natsConsumer) inProgress(d *Delivery) error {
	if err := d.ref.(jetstream.Msg).InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		return fmt.Errorf("transit: extend message %d of %q: %w", d.Seq, c.qname, err)
	}
	return nil
}

// keepAlive extends the ack wait of every delivery not acknowledged yet
// and sends a held-back acknowledgement.
func (c *natsConsumer) keepAlive() {
	c.flushAck()
	c.mu.Lock()
	pend := append([]*Delivery(nil), c.pend...)
	c.mu.Unlock()
	var last any
	for _, d := range pend {
		if d.ref != last { // once per bus message
			last = d.ref
			_ = c.inProgress(d)
		}
	}
}
