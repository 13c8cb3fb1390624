package transit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
)

// Batches: several queue messages in one bus message.
//
// A bus message without the BatchHeader is one queue message: its payload
// is the message's JSON, exactly as a lone send stores it. A bus message
// with the header carries the header's number of queue messages (members),
// in queue order, each written as its length in bytes (decimal ASCII), a
// newline, its JSON and a newline:
//
//	Mm-Batch: 2
//
//	17
//	{"i":1,"a":"x"}
//	17
//	{"i":2,"a":"y"}
//
// so `nats stream view` still shows readable JSON, and the length prefix
// keeps the split independent of what the JSON contains.
const (
	// BatchHeader marks a bus message that holds several queue messages;
	// its value is their number.
	BatchHeader = "Mm-Batch"

	batchMaxMembers = 512       // at most this many queue messages per bus message
	batchMaxBytes   = 256 << 10 // and at most this many payload bytes (unless one message is larger)
)

// Consumer metadata keys kept on a queue's durable consumer (besides
// metaSuspect and metaSuspectN): how far a bus message that holds several
// queue messages was handled when its owner stopped cleanly without
// finishing it ("seq:members"), so the next owner starts after them.
const metaDone = "multimodule_done"

// appendMember appends one member to a batch payload.
func appendMember(buf, data []byte) []byte {
	buf = strconv.AppendInt(buf, int64(len(data)), 10)
	buf = append(buf, '\n')
	buf = append(buf, data...)
	return append(buf, '\n')
}

// batchSize is the payload size of a batch of members of total bytes.
func batchSize(members, total int) int {
	return total + members*(2+len(strconv.Itoa(batchMaxBytes)))
}

// splitBatch returns the members of a batch payload that must hold count
// of them (1 to batchMaxMembers, the most a sender puts in one bus
// message). The members are sub-slices of data.
func splitBatch(data []byte, count int) ([][]byte, error) {
	if count < 1 || count > batchMaxMembers {
		return nil, fmt.Errorf("member count %d, a batch holds 1 to %d", count, batchMaxMembers)
	}
	if count > len(data) {
		return nil, fmt.Errorf("member count %d does not fit %d bytes", count, len(data))
	}
	out := make([][]byte, 0, count)
	for len(data) > 0 {
		if len(out) == count {
			return nil, fmt.Errorf("%d bytes after the %d members the header announces", len(data), count)
		}
		nl := bytes.IndexByte(data, '\n')
		if nl < 1 || nl > 10 {
			return nil, fmt.Errorf("member %d: no length line", len(out))
		}
		n, err := strconv.Atoi(string(data[:nl]))
		if err != nil || n < 0 || nl+1+n+1 > len(data) || data[nl+1+n] != '\n' {
			return nil, fmt.Errorf("member %d: bad length %q", len(out), data[:nl])
		}
		out = append(out, data[nl+1:nl+1+n])
		data = data[nl+1+n+1:]
	}
	if len(out) != count {
		return nil, fmt.Errorf("%d members, the header says %d", len(out), count)
	}
	return out, nil
}

// encodeBatch builds one bus message of subject subj from members (at
// least one): a lone member is its own payload, without header.
func encodeBatch(subj string, members [][]byte, total int) *nats.Msg {
	msg := &nats.Msg{Subject: subj}
	if len(members) == 1 {
		msg.Data = members[0]
		return msg
	}
	buf := make([]byte, 0, batchSize(len(members), total))
	for _, m := range members {
		buf = appendMember(buf, m)
	}
	msg.Data = buf
	msg.Header = nats.Header{BatchHeader: []string{strconv.Itoa(len(members))}}
	return msg
}

// isLast reports whether d is the last queue message of its bus message,
// whose acknowledgement acknowledges the bus message.
func (d *Delivery) isLast() bool { return d.member == d.members-1 }

// after reports whether d comes after e in queue order.
func (d *Delivery) after(e *Delivery) bool {
	return d.Seq > e.Seq || (d.Seq == e.Seq && d.member > e.member)
}

// parseDone reads a metaDone value.
func parseDone(s string) (seq uint64, n int) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0
	}
	seq, _ = strconv.ParseUint(a, 10, 64)
	n, _ = strconv.Atoi(b)
	if seq == 0 || n < 0 {
		return 0, 0
	}
	return seq, n
}

// deliveries turns one fetched bus message into the deliveries of the
// queue messages it holds, in order, and decides which of them go to the
// dead-letter queue. After a take-over, the first bus message is the one
// that was in flight: unless its previous owner recorded how far it got
// (a clean stop, metaDone), or its Transit closed cleanly (metaClean),
// the count of owners that died with it is
// recorded in the consumer's metadata before it is handed out again, and
// at MaxDeliver every queue message of it not recorded as done is
// dead-lettered. Members recorded as done are skipped; skipped reports
// how many.
func (b *natsBus) deliveries(ctx context.Context, cons jetstream.Consumer, m jetstream.Msg, tk *takeover) (ds []*Delivery, skipped int) {
	var (
		seq        uint64
		stored     int64
		deliveries = 1
		dead       string
	)
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
		stored = md.Timestamp.UnixNano()
		deliveries = int(md.NumDelivered)
	}
	doneHere := tk.doneN > 0 && tk.doneSeq == seq
	switch {
	case tk.active:
		tk.active = false
		cfg := tk.cfg
		cfg.Metadata = map[string]string{}
		for k, v := range tk.cfg.Metadata {
			cfg.Metadata[k] = v
		}
		delete(cfg.Metadata, metaDone)  // applied now, or stale
		delete(cfg.Metadata, metaClean) // likewise: from now on a death counts
		update := tk.doneSeq != 0 || tk.hadClean
		count := 0
		if tk.prevSeq == seq {
			count = tk.prevCount
		}
		if !doneHere && !tk.clean && !b.opts.OwnerCountsCrashes {
			// Its previous owner stopped while handling it, without a
			// record of how far it got: count it as a death.
			count++
			if count >= b.opts.MaxDeliver {
				dead = fmt.Sprintf("its consumer stopped %d times while handling it, without acknowledging it", count)
			} else {
				cfg.Metadata[metaSuspect] = strconv.FormatUint(seq, 10)
				cfg.Metadata[metaSuspectN] = strconv.Itoa(count)
				update = true
			}
		}
		deliveries = count + 1
		if update {
			uctx, cancel := context.WithTimeout(ctx, apiTimeout)
			if _, err := b.js.UpdateConsumer(uctx, cons.CachedInfo().Stream, cfg); err != nil {
				b.log.Warn("record the in-flight message of a take-over", "consumer", cfg.Durable, "seq", seq, "err", err)
			}
			cancel()
		}
	case doneHere:
		// Redelivered (ack wait) after a clean stop: skip what was done,
		// and forget the record so that a crash from now on counts.
		cfg := tk.cfg
		cfg.Metadata = map[string]string{}
		for k, v := range tk.cfg.Metadata {
			if k != metaDone {
				cfg.Metadata[k] = v
			}
		}
		uctx, cancel := context.WithTimeout(ctx, apiTimeout)
		if _, err := b.js.UpdateConsumer(uctx, cons.CachedInfo().Stream, cfg); err != nil {
			b.log.Warn("forget the record of a partly handled bus message", "consumer", cfg.Durable, "seq", seq, "err", err)
		}
		cancel()
		fallthrough
	default:
		if deliveries > b.opts.MaxDeliver {
			dead = fmt.Sprintf("delivered %d times without being acknowledged within the ack wait", deliveries)
		}
	}
	if doneHere {
		tk.doneSeq, tk.doneN, skipped = 0, 0, tk.doneN
	}

	data := m.Data()
	members := [][]byte{data}
	var bad string // the whole bus message is one dead letter, for this reason
	hv := ""
	if h := m.Headers(); h != nil {
		hv = h.Get(BatchHeader)
	}
	if hv != "" {
		n, err := strconv.Atoi(hv)
		if err == nil {
			members, err = splitBatch(data, n)
		}
		if err != nil {
			bad = fmt.Sprintf("not a valid batch (%s: %.20q): %v", BatchHeader, hv, err)
			members = [][]byte{data}
		}
	}
	if skipped >= len(members) {
		// Everything was done; the acknowledgement got lost. Hand out
		// the last member again so that it is acknowledged.
		skipped = len(members) - 1
	}
	if bad == "" {
		ds = make([]*Delivery, 0, len(members)-skipped)
		for i, mb := range members {
			msg, err := decodeExact(mb)
			if err != nil {
				// A lone message: itself. A batch member: senders write
				// only messages they encoded, so the batch is forged or
				// damaged, and none of it is to be trusted.
				bad = "not a JSON object: " + err.Error()
				if hv != "" {
					bad = fmt.Sprintf("not a valid batch (%s: %.20q): member %d of %d is not a JSON object: %v", BatchHeader, hv, i+1, len(members), err)
				}
				break
			}
			if i >= skipped { // the others were handled by an earlier owner
				ds = append(ds, &Delivery{ref: m, Seq: seq, Deliveries: deliveries, member: i, members: len(members), dead: dead, Msg: msg, stored: stored})
			}
		}
	}
	if bad != "" {
		// One dead letter holding the bus message's exact bytes; a
		// record of how far an earlier owner got in it is meaningless.
		d := &Delivery{ref: m, Seq: seq, Deliveries: deliveries, members: 1, dead: bad, raw: data, Msg: rawMessage(data), stored: stored}
		return []*Delivery{d}, 0
	}
	return ds, skipped
}

// rawMessage is the body of the dead letter of bytes that are not a
// message: raw holds them exactly, as text when they are UTF-8
// (raw_encoding "utf-8"), else in standard base64 (raw_encoding
// "base64").
func rawMessage(data []byte) message.Message {
	if utf8.Valid(data) {
		return message.Message{"raw": string(data), "raw_encoding": "utf-8"}
	}
	return message.Message{"raw": base64.StdEncoding.EncodeToString(data), "raw_encoding": "base64"}
}

// recordDone keeps, in the consumer's metadata, that the first n queue
// messages of bus message seq are handled, for the next owner (which
// skips them). It is called when an owner stops cleanly in the middle of
// a bus message, never on the hot path.
func (b *natsBus) recordDone(cons jetstream.Consumer, seq uint64, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.AckFloor.Stream >= seq {
		return nil // acknowledged meanwhile
	}
	cfg := info.Config
	md := map[string]string{}
	for k, v := range cfg.Metadata {
		md[k] = v
	}
	md[metaDone] = strconv.FormatUint(seq, 10) + ":" + strconv.Itoa(n)
	cfg.Metadata = md
	_, err = b.js.UpdateConsumer(ctx, info.Stream, cfg)
	return err
}

// unpack turns a fetched bus message into deliveries of this consumer,
// pending until acknowledged.
func (c *natsConsumer) unpack(m jetstream.Msg, tk *takeover) []*Delivery {
	ds, skipped := c.b.deliveries(c.b.ctx, c.cons, m, tk)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		d.ack, d.deadLetter = c.ack, c.deadLetterOwned
	}
	c.pend = append(c.pend, ds...)
	if skipped > 0 && len(ds) > 0 {
		// Handled by an earlier owner: this owner's progress starts there.
		c.doneSeq, c.doneN, c.doneDirty = ds[0].Seq, skipped, true
	}
	return ds
}

// progress notes that d is handled (acknowledged or dead-lettered);
// c.mu held.
func (c *natsConsumer) progress(d *Delivery) {
	switch {
	case d.isLast():
		if d.Seq >= c.doneSeq {
			c.doneSeq, c.doneN, c.doneDirty = 0, 0, false
		}
	case d.Seq > c.doneSeq || (d.Seq == c.doneSeq && d.member+1 > c.doneN):
		c.doneSeq, c.doneN, c.doneDirty = d.Seq, d.member+1, true
	}
}

// writeDone records, once the consumer stopped, how far the owner got in
// a bus message it did not finish, so that the next owner starts after
// the queue messages handled already instead of repeating them. (After a
// crash nothing is recorded: the whole bus message comes again.)
func (c *natsConsumer) writeDone() {
	c.doneMu.Lock()
	defer c.doneMu.Unlock()
	c.mu.Lock()
	c.doneArmed = false
	if !c.exited || !c.doneDirty || c.doneSeq == 0 || c.doneSeq <= c.highest {
		c.mu.Unlock()
		return
	}
	seq, n := c.doneSeq, c.doneN
	c.doneDirty = false
	c.mu.Unlock()
	if err := c.b.recordDone(c.cons, seq, n); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.b.log.Warn("record a partly handled bus message; the next owner repeats it", "queue", c.qname, "seq", seq, "handled", n, "err", err)
	}
}
