package transit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsConsumer feeds one queue's deliveries to its owner. Its run loop
// owns the pull requests and the queue of fetched messages; Ack (called by
// the owner) and the loop share the list of unacknowledged deliveries.
type natsConsumer struct {
	b            *natsBus
	cons         jetstream.Consumer
	scope, qname string
	out          chan *Delivery
	stopCtx      context.Context // ends: fetch no more
	stopFn       context.CancelFunc
	queued       atomic.Int64  // fetched, not yet handed out
	acked        chan struct{} // a delivery was acknowledged (for dead-lettering)

	mu        sync.Mutex
	exited    bool        // the run loop ended: acknowledgements go out one by one, confirmed
	highest   uint64      // highest acknowledged stream sequence
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

	// run loop only
	seq       seqWatch
	resyncing bool // a delivery never arrived: take the queue over again
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
	}
	c.seq.start(tk)
	c.stopCtx, c.stopFn = context.WithCancel(b.ctx)
	stopAfter := context.AfterFunc(ctx, c.stopFn)
	b.consumers.Add(1)
	go func() {
		defer b.consumers.Done()
		defer stopAfter()
		c.run(tk)
	}()
	return &Consumer{queue: qname, ch: c.out, stop: c.stopFn}, nil
}

// run fetches and hands out messages until stopped, then hands out what
// was fetched and closes out. The bus closing (b.ctx) aborts at once.
func (c *natsConsumer) run(tk takeover) {
	log := c.b.log.With("queue", c.qname)
	defer close(c.out)
	defer c.finish()
	keep := time.NewTicker(max(c.b.opts.AckWait/3, 10*time.Millisecond))
	defer keep.Stop()
	var (
		queue       []*Delivery
		batch       jetstream.MessageBatch
		msgs        <-chan jetstream.Msg
		retry       <-chan time.Time
		fetchCancel = context.CancelFunc(func() {})
	)
	defer func() { fetchCancel() }()
	for {
		if c.resyncing && len(queue) == 0 && retry == nil && c.stopCtx.Err() == nil && c.allHandled() {
			if err := c.resync(); err != nil {
				log.Warn("taking the queue over again failed; retrying", "err", err)
				retry = time.After(250 * time.Millisecond)
			} else {
				c.resyncing = false
			}
		}
		if batch == nil && retry == nil && !c.resyncing && c.stopCtx.Err() == nil && len(queue) < fetchBatch/2 {
			var err error
			fetchCancel()
			batch, fetchCancel, err = c.fetch()
			if err != nil {
				batch = nil
				if c.stopCtx.Err() == nil {
					log.Warn("pull from the bus failed; retrying", "err", err)
					retry = time.After(250 * time.Millisecond)
				}
			} else {
				msgs = batch.Messages()
			}
		}
		if batch == nil && len(queue) == 0 && c.stopCtx.Err() != nil {
			return
		}
		var (
			outc chan *Delivery
			head *Delivery
		)
		if len(queue) > 0 {
			head = queue[0]
			if head.dead != "" {
				if c.onlyUnacked(head) {
					if err := c.b.deadLetter(c.b.ctx, c.scope, c.qname, head); err != nil {
						log.Error("dead-lettering failed", "err", err)
						return
					}
					c.drop(head)
					queue = queue[1:]
					c.queued.Store(int64(len(queue)))
					continue
				}
			} else {
				outc = c.out
			}
		}
		var stopped <-chan struct{}
		if batch == nil && retry == nil {
			stopped = c.stopCtx.Done()
		}
		select {
		case outc <- head:
			queue = queue[1:]
			c.queued.Store(int64(len(queue)))
		case m, ok := <-msgs:
			if !ok {
				if err := batch.Error(); err != nil && !isPullEnd(err) {
					log.Warn("pull from the bus ended", "err", err)
				}
				batch, msgs = nil, nil
				continue
			}
			if dropped(c.qname, m) {
				continue
			}
			if gap, want, got := c.seq.saw(m); gap {
				// Not handed out: after the reset it comes again, in order.
				log.Warn("deliveries from the bus never reached this consumer; taking the queue over again once what was handed out is acknowledged",
					"want_consumer_seq", want, "got", got)
				c.resyncing = true
				fetchCancel()
				batch, msgs = nil, nil
				continue
			}
			queue = append(queue, c.unpack(m, &tk)...)
			c.queued.Store(int64(len(queue)))
		case <-retry:
			retry = nil
		case <-keep.C:
			c.keepAlive()
		case <-c.acked:
		case <-stopped:
		case <-c.b.ctx.Done():
			return
		}
	}
}

// fetch asks the bus for up to fetchBatch messages; the request ends
// after fetchWait, or when the consumer stops.
func (c *natsConsumer) fetch() (jetstream.MessageBatch, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(c.stopCtx, fetchWait)
	batch, err := c.cons.Fetch(fetchBatch, jetstream.FetchContext(ctx))
	return batch, cancel, err
}

func isPullEnd(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrConnectionClosed)
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
	c.highest = max(c.highest, d.Seq)
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
	c.mu.Unlock()
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
	if err := c.waitAckFloor(ctx, highest); err != nil {
		c.b.log.Warn("acknowledgements not confirmed by the bus", "queue", c.qname, "seq", highest, "err", err)
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
