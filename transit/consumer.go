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
	ch   <-chan *Delivery
	stop func()
	once sync.Once
}

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
	deadLetter func(context.Context, *Delivery, string, map[string]any) error
	ref        any    // the backend's handle (a jetstream.Msg)
	dead       string // non-empty: move to the dead-letter queue for this reason
	raw        []byte // for a dead letter of bytes that are not a message: those bytes
	member     int    // its place in its bus message (0-based)
	members    int    // the number of queue messages in its bus message (1: not a batch)
	stored     int64  // when the bus stored its bus message (Unix ns; 0: unknown)
}

// Ack acknowledges the delivery (and, the bus being in order, every
// earlier one). Acknowledgements are sent in groups under load and at once
// when no further delivery is waiting. A bus message that carries several
// queue messages is acknowledged with the last of them.
func (d *Delivery) Ack() error { return d.ack(d) }

// Member is the delivery's place in its bus message (0 for the first or
// only one): with Seq it names the queue message.
func (d *Delivery) Member() int { return d.member }

// Stored is when the bus stored the delivery's bus message, in Unix
// nanoseconds (0: not known). The same in every delivery of the message;
// with Seq it tells the message from one a stream created again gives
// the same sequence.
func (d *Delivery) Stored() int64 { return d.stored }

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
