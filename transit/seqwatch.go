package transit

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// seqWatch follows the consumer sequence of the deliveries one owner of a
// queue receives. JetStream numbers every delivery of a consumer
// (redeliveries included), so the owner can tell when a delivery never
// reached it: the nats.go pull client drops what is still buffered for a
// pull whose context ends (its goroutine may pick the ended context over
// the buffered messages), and a pull request a stopped owner left behind
// can still be served. The bus counts such a delivery as handed out and
// unacknowledged; with AckAll, acknowledging any later message would
// acknowledge it too and it would be lost. On a gap the owner takes its
// queue over again instead: once what it handed out is acknowledged, it
// resets the consumer to its ack floor and the bus delivers the missing
// message again.
type seqWatch struct {
	next  uint64 // the consumer sequence expected next
	known bool   // next is known (after a take-over's info)
}

func (w *seqWatch) start(tk takeover) { w.next, w.known = tk.delivered+1, tk.known }

// saw records delivery m and reports whether deliveries before it never
// arrived here (want is the consumer sequence expected, got m's).
func (w *seqWatch) saw(m jetstream.Msg) (gap bool, want, got uint64) {
	md, err := m.Metadata()
	if err != nil {
		return false, 0, 0
	}
	want, got = w.next, md.Sequence.Consumer
	gap = w.known && got > want
	w.next, w.known = got+1, true
	return gap, want, got
}

// dropDelivery, when set (by tests), makes a consumer discard the
// deliveries for which it returns true as if the pull client had dropped
// them: the bus counts them as delivered, the owner never sees them.
var dropDelivery atomic.Pointer[func(queue string, consumerSeq uint64) bool]

// dropAck, when set (by tests), makes a consumer skip sending the
// acknowledgements of the bus messages (by stream sequence) for which it
// returns true, as if the bus never applied them.
var dropAck atomic.Pointer[func(queue string, streamSeq uint64) bool]

func ackDropped(qname string, seq uint64) bool {
	f := dropAck.Load()
	return f != nil && (*f)(qname, seq)
}

// ackConfirmWait bounds how long a take-over waits for the bus to confirm
// the acknowledgements sent so far before it resets the consumer to the
// bus' ack floor all the same (a variable for tests).
var ackConfirmWait = 5 * time.Second

func dropped(qname string, m jetstream.Msg) bool {
	f := dropDelivery.Load()
	if f == nil {
		return false
	}
	md, err := m.Metadata()
	return err == nil && (*f)(qname, md.Sequence.Consumer)
}

// resync takes the queue over again after a gap (see seqWatch) or a
// restored connection (the bus may have restarted): every
// delivery handed out is acknowledged (the caller waited for that); once
// the bus confirms the acknowledgements, or after ackConfirmWait without
// that, the consumer is reset to its ack floor, so the missing
// deliveries, and anything delivered after them, come again in order.
// The wait is bounded because a bus cluster can leave the confirmation
// out for good: the consumer's leader counts an acknowledgement at once
// and replicates it afterwards; a replication lost to a leadership change
// leaves the replicated ack floor (the one the bus reports) behind the
// leader's, and the leader answers every acknowledgement sent again as
// one it has, without replicating anything. Only a later acknowledgement
// would move the reported floor, and none comes while the owner waits.
// The reset itself goes to the leader's floor. The pull requests alive at the bus go with the old
// inbox subscription (the bus drops a request nobody listens to instead of
// serving it), and what they brought before the reset is dropped with the
// old inbox: it comes again too. Without the new inbox, a delivery made
// before the reset could be taken after it, out of order.
func (c *natsConsumer) resync() error {
	c.flushAck()
	c.mu.Lock()
	highest, hd := c.highest, c.highestD
	c.mu.Unlock()
	if highest > 0 {
		cctx, ccancel := context.WithTimeout(c.stopCtx, ackConfirmWait)
		err := c.confirmAcks(cctx, highest, hd)
		ccancel()
		if err != nil {
			if c.stopCtx.Err() != nil {
				return err
			}
			// Not waiting any longer: the reset goes to the ack floor
			// of the consumer's leader, which counts every
			// acknowledgement it received, replicated or not; what it
			// never received is delivered again (at least once).
			c.b.log.Warn("taking the queue over again from the bus' ack floor although acknowledgements are not confirmed; what they covered may come again",
				"queue", c.qname, "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(c.stopCtx, apiTimeout)
	defer cancel()
	in := make(chan *nats.Msg, inCap)
	inbox := c.b.nc.NewInbox()
	sub, err := c.b.nc.ChanSubscribe(inbox+".*", in)
	if err != nil {
		return fmt.Errorf("transit: consume %q: subscribe: %w", c.qname, err)
	}
	_ = c.sub.Unsubscribe()
	c.in, c.inbox, c.sub = in, inbox, sub
	name := c.cons.CachedInfo().Name
	if _, err := c.b.js.ResetConsumer(ctx, c.b.streamName(c.scope), name); err != nil {
		return fmt.Errorf("transit: bus consumer %s: reset to the ack floor: %w", name, err)
	}
	info, err := c.cons.Info(ctx)
	if err != nil {
		c.seq.known = false
		return nil
	}
	c.seq.next, c.seq.known = info.Delivered.Consumer+1, true
	c.b.log.Info("took the queue over again", "queue", c.qname, "why", c.resyncWhy,
		"ack_floor", info.AckFloor.Stream)
	return nil
}

// confirmAcks waits until the bus confirms the acknowledgements up to
// stream sequence highest (d's). After a bus restart the latest ones may
// have gone with the old bus: the acknowledgement of d (AckAll:
// everything up to it) is sent again, as a request the bus answers once
// it applied it (the client remembers that d was acknowledged and would
// not send it twice). A bus killed before it stored its record of the
// deliveries has forgotten them and ignores their acknowledgement: then
// the reset delivers them again (at least once).
func (c *natsConsumer) confirmAcks(ctx context.Context, highest uint64, d *Delivery) error {
	m, _ := d.ref.(jetstream.Msg)
	delay := time.Millisecond
	for {
		info, err := c.cons.Info(ctx)
		if err == nil {
			if info.AckFloor.Stream >= highest {
				return nil
			}
			if info.Delivered.Stream < highest {
				c.b.log.Info("the bus restarted without its record of deliveries that were handled; they come again",
					"queue", c.qname, "delivered", info.Delivered.Stream, "acknowledged", highest)
				return nil
			}
			if m != nil && m.Reply() != "" && ackDropped(c.qname, highest) {
				delay = 0 // as if answered
			} else if m != nil && m.Reply() != "" {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err = c.b.nc.RequestWithContext(rctx, m.Reply(), []byte("+ACK"))
				cancel()
				if err == nil {
					delay = 0 // applied: the ack floor shows it
				}
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return fmt.Errorf("transit: acknowledgements of %q up to %d not confirmed by the bus: %w", c.qname, highest, err)
		case <-time.After(delay):
		}
		delay = min(max(2*delay, time.Millisecond), 50*time.Millisecond)
	}
}

// allHandled reports whether every delivery fetched was acknowledged or
// dead-lettered.
func (c *natsConsumer) allHandled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pend) == 0
}
