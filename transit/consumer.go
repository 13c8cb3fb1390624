package transit

import (
	"context"
	"errors"
	"sync"

	"github.com/multimodule/multimodule/message"
)

// Consumer delivers the messages of one bus queue to its owner, in queue
// order. Obtain one with [Transit.Consume].
type Consumer struct {
	queue string
	ch    <-chan *Delivery
	stop  func()
	once  sync.Once
}

// Queue returns the name of the consumed queue.
func (c *Consumer) Queue() string { return c.queue }

// C returns the channel of deliveries. It is closed after Stop once the
// already fetched messages were delivered, or when the Transit closes.
func (c *Consumer) C() <-chan *Delivery { return c.ch }

// Stop fetches no more messages: C delivers what was already fetched and
// then closes. Acknowledge those deliveries as usual. Safe to call twice.
func (c *Consumer) Stop() { c.once.Do(c.stop) }

// Delivery is one message taken from a bus queue. The owner handles Msg
// and then calls Ack (also when the handler failed: a failed message is not retried). A delivery
// that is never acknowledged is delivered again to the next owner.
type Delivery struct {
	// Msg is the decoded message; the receiver owns it.
	Msg message.Message
	// Seq is the position in its stream of the bus message that carried
	// this message, for logs. It increases in queue order, except that
	// the messages of one batch (see BatchHeader) share it.
	Seq uint64
	// Deliveries is how many times this message was handed to an owner,
	// this time included, as far as the bus knows.
	Deliveries int

	ack        func(*Delivery) error
	inProgress func(*Delivery) error
	deadLetter func(context.Context, *Delivery, string, map[string]any) error
	ref        any    // the backend's handle (a jetstream.Msg)
	dead       string // non-empty: move to the dead-letter queue for this reason
	raw        []byte // for a dead letter of bytes that are not a message: those bytes
	member     int    // its place in its bus message (0-based)
	members    int    // the number of queue messages in its bus message (1: not a batch)
}

// Ack acknowledges the delivery (and, the bus being in order, every
// earlier one). Acknowledgements are sent in groups under load and at once
// when no further delivery is waiting. A bus message that carries several
// queue messages is acknowledged with the last of them.
func (d *Delivery) Ack() error { return d.ack(d) }

// InProgress tells the bus the handler is still working, so the message
// is not handed to anybody else. The Consumer already does this every
// AckWait/3 for every delivery it handed out and that is not acknowledged
// yet, so calling it is optional.
func (d *Delivery) InProgress() error {
	if d.inProgress == nil {
		return nil
	}
	return d.inProgress(d)
}

// Member is the delivery's place in its bus message (0 for the first or
// only one): with Seq it names the queue message.
func (d *Delivery) Member() int { return d.member }

// DeadLetter moves the message to DeadLetterQueue with reason (and
// details, merged into .ipc_transit_meta.dead_letter) instead of handing
// it to the handler: the owner decided it must not be handled (it killed
// its handler's process). It returns once the dead-letter queue has it
// stored; the owner then acknowledges the delivery as usual.
func (d *Delivery) DeadLetter(ctx context.Context, reason string, details map[string]any) error {
	if d.deadLetter == nil {
		return errors.New("transit: dead-letter: not a bus delivery")
	}
	return d.deadLetter(ctx, d, reason, details)
}

// Serve consumes queue qname until ctx is done or the Transit closes,
// calling handle for each message on this goroutine and acknowledging it
// afterwards (also when handle failed: a failed message is not retried). It returns nil when ctx
// ends, or the error that stopped it.
func (t *Transit) Serve(ctx context.Context, qname string, handle func(message.Message)) error {
	cons, err := t.Consume(ctx, qname)
	if err != nil {
		return err
	}
	defer cons.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-cons.C():
			if !ok {
				return nil
			}
			handle(d.Msg)
			if err := d.Ack(); err != nil {
				t.log.Warn("ack failed; the message may be delivered again", "queue", qname, "error", err)
			}
		}
	}
}
