package transit

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A queue's consumer pulls from the bus with its own pull requests to one
// long-lived inbox subscription (not jetstream.Fetch): a request stays
// with the bus for pullWait, so an idle queue costs one renewal per
// pullWait and no timer or goroutine wakes up in between; and a message
// the bus delivered is never dropped in this process while the consumer
// goes on (Fetch drops what is still on its way when its client-side
// deadline passes; an acknowledgement of a later message would then
// acknowledge the dropped one too: AckAll).
var (
	pullWait  = 60 * time.Second // expiry of a pull request: an idle queue renews it this often (tests shorten it)
	pullGrace = 10 * time.Second // no end of a pull request this long after its expiry: presumed lost, asked again
)

const (
	// inCap is the room for messages on their way from the connection to
	// the run loop (a full inbox would drop them). They are unacknowledged
	// deliveries, at most the consumer's MaxAckPending (4*fetchBatch),
	// plus one status message per request still alive at the bus (one,
	// two when one presumed lost was not, a few more after reconnects).
	inCap = 4*fetchBatch + 256
)

// pullRequest is the body of a JetStream pull request.
func pullRequest(batch int, expires time.Duration) []byte {
	b := []byte(`{"batch":`)
	b = strconv.AppendInt(b, int64(batch), 10)
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, int64(expires), 10)
	return append(b, '}')
}

// pullStatus returns the status code of a bus status message (a pull
// request ended: 408 expired, 409 conflict, 404 nothing, 503 no
// responders; 100 heartbeat), or "" for a message of the queue.
func pullStatus(m *nats.Msg) string {
	if len(m.Data) > 0 || m.Header == nil {
		return ""
	}
	return m.Header.Get("Status")
}

// busMsg is a bus message delivered to a consumer's inbox, as a
// jetstream.Msg (acknowledged through its reply subject, like the
// jetstream package's own).
type busMsg struct {
	m    *nats.Msg
	nc   *nats.Conn
	ackd atomic.Bool
}

var _ jetstream.Msg = (*busMsg)(nil)

func (b *busMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := b.m.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered,
		NumPending:   md.NumPending,
		Timestamp:    md.Timestamp,
		Stream:       md.Stream,
		Consumer:     md.Consumer,
		Domain:       md.Domain,
	}, nil
}

func (b *busMsg) Data() []byte         { return b.m.Data }
func (b *busMsg) Headers() nats.Header { return b.m.Header }
func (b *busMsg) Subject() string      { return b.m.Subject }
func (b *busMsg) Reply() string        { return b.m.Reply }

func (b *busMsg) reply(ctx context.Context, body string, final, wait bool) error {
	if b.m.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	if b.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	var err error
	if wait {
		_, err = b.nc.RequestWithContext(ctx, b.m.Reply, []byte(body))
	} else {
		err = b.nc.Publish(b.m.Reply, []byte(body))
	}
	if err == nil && final {
		b.ackd.Store(true)
	}
	return err
}

func (b *busMsg) Ack() error { return b.reply(context.Background(), "+ACK", true, false) }
func (b *busMsg) DoubleAck(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiTimeout)
		defer cancel()
	}
	return b.reply(ctx, "+ACK", true, true)
}
func (b *busMsg) Nak() error        { return b.reply(context.Background(), "-NAK", true, false) }
func (b *busMsg) InProgress() error { return b.reply(context.Background(), "+WPI", false, false) }
func (b *busMsg) Term() error       { return b.reply(context.Background(), "+TERM", true, false) }
func (b *busMsg) NakWithDelay(delay time.Duration) error {
	return b.reply(context.Background(), `-NAK {"delay": `+strconv.FormatInt(int64(delay), 10)+`}`, true, false)
}
func (b *busMsg) TermWithReason(reason string) error {
	return b.reply(context.Background(), "+TERM "+reason, true, false)
}
