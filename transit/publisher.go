package transit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
)

// Tuning of the asynchronous publisher.
const (
	laneMaxInflight = 2         // bus messages of one queue in flight (a second one only for a full batch)
	busMaxInflight  = 512       // bus messages in flight in all
	asyncMaxBytes   = 128 << 20 // queue message bytes accepted by SendAsync and not yet stored; SendAsync waits above
)

// asyncMaxMsgs is the number of queue messages accepted by SendAsync and
// not yet stored above which SendAsync waits (a variable for tests).
var asyncMaxMsgs = 32768

// publisher pipelines SendAsync publishes, one lane per queue (subject).
// A lane publishes a message at once when none of its bus messages is in
// flight; messages that come while one is in flight wait in the lane and
// go out together, as one bus message (a batch, see BatchHeader), when
// the bus acknowledged the previous one, or as soon as a full batch is
// ready (at most laneMaxInflight per lane). So a lone message goes out
// without delay, and a burst costs the bus one stored message per batch.
//
// Bounds: at most busMaxInflight bus messages in flight in all (lanes
// beyond wait their turn, oldest first), and at most asyncMaxMsgs /
// asyncMaxBytes queue messages accepted and not yet stored: above that,
// SendAsync waits for room (bounded by its context) instead of piling up
// publishes that would time out.
//
// A bus message the bus did not confirm because the connection dropped
// (the bus restarting), nobody answered, or the acknowledgement timed out
// is published again, before the lane's later messages, until it is
// stored or the connection is closed: Flush waits for it instead of
// reporting a failure that the caller could only answer by hoping for a
// redelivery. Every bus message carries a message ID (Nats-Msg-Id, one
// per bus message, a batch's members share it) that its publishes again
// repeat: a copy stored by an attempt the bus did not confirm in time is
// dropped by the stream's duplicate window (2 minutes). Only a publish
// again later than that stores a second copy (at least once).
//
// A bus message the bus refused because its queue is full is published
// again too, while the queue has been full for less than Options.FullWait
// (counted per lane from the first refusal; a stored message of the lane
// ends the count): the lane's later messages wait behind it, and so does
// Flush, which a host calls before it acknowledges the messages whose
// handling sent them — the backpressure. After FullWait its queue
// messages move to the dead-letter queue of this process' host scope,
// each with the target queue and the reason (deadLetter); Flush reports
// an error only if that fails too. A send is never acknowledged and
// dropped.
type publisher struct {
	b           *natsBus
	maxBatch    int           // payload bytes of a batch
	maxMsgs     int           // asyncMaxMsgs when created
	idPrefix    string        // message IDs: this prefix, unique to the publisher, and a count
	ids         atomic.Uint64 // message IDs handed out
	republished atomic.Int64  // bus messages scheduled to be published again (for tests)

	mu       sync.Mutex
	lanes    map[string]*lane // by subject
	busy     map[*lane]struct{}
	starved  []*lane // lanes with messages ready when a bus slot frees
	inflight int     // bus messages in flight
	msgs     int     // queue messages accepted and not yet stored or failed
	bytes    int
	room     chan struct{} // closed when msgs/bytes drop; nil while nobody waits
	progress chan struct{} // closed when a lane's messages complete; nil while nobody waits
	errs     []error       // failed sends since the last flush
	lost     int           // more of them, not kept

	gmu     sync.Mutex // guards stopped against pumps.Add
	stopped bool
	pumps   sync.WaitGroup // goroutines started by callbacks
}

// lane is the publishing state of one queue. Positions count the
// queue messages accepted by the lane so far.
type lane struct {
	subj, qname string
	scope       string    // the host scope of the queue
	fullSince   time.Time // the bus first refused a message of the lane as full; zero: not full
	pend        [][]byte  // accepted, not published yet, in order
	solo        []soloMsg // those of pend with an ID of their own, in order
	pendBytes   int
	next        uint64    // position of the next accepted message
	flights     []*flight // published, not acknowledged yet, in publish order
	retry       []*flight // not confirmed by the bus, to publish again first, by position
	pumping     bool      // a goroutine is publishing for this lane
	starved     bool      // in publisher.starved
}

// soloMsg is a message of a lane that has a message ID of its own
// (HostSendOptions.MsgID): it goes out alone, with that ID.
type soloMsg struct {
	pos uint64 // its position
	id  string
}

// flight is one bus message in flight.
type flight struct {
	msg      *nats.Msg
	from     uint64 // position of its first queue message
	n        int    // queue messages in it
	bytes    int
	attempts int // failed publishes so far
}

func newPublisher(b *natsBus, maxPayload int64) *publisher {
	maxBatch := batchMaxBytes
	if maxPayload > 0 && int64(maxBatch) > maxPayload/4 {
		maxBatch = int(maxPayload / 4)
	}
	return &publisher{b: b, maxBatch: maxBatch, maxMsgs: asyncMaxMsgs, lanes: map[string]*lane{}, busy: map[*lane]struct{}{},
		idPrefix: nats.NewInbox()[len(nats.InboxPrefix):] + "."}
}

// msgID returns a message ID no other bus message of any process has:
// the publisher's random prefix and a count (one allocation).
func (p *publisher) msgID() string {
	var num [20]byte
	n := strconv.AppendUint(num[:0], p.ids.Add(1), 36)
	var sb strings.Builder
	sb.Grow(len(p.idPrefix) + len(n))
	sb.WriteString(p.idPrefix)
	sb.Write(n)
	return sb.String()
}

// setMsgID gives bus message m a new message ID.
func (p *publisher) setMsgID(m *nats.Msg) {
	if m.Header == nil {
		m.Header = make(nats.Header, 1)
	}
	m.Header[jetstream.MsgIDHeader] = []string{p.msgID()}
}

// completed returns the position before which every message of the lane
// is stored or failed.
func (l *lane) completed() uint64 {
	c := l.next - uint64(len(l.pend))
	for _, f := range l.flights {
		c = min(c, f.from)
	}
	for _, f := range l.retry {
		c = min(c, f.from)
	}
	return c
}

// idle reports whether the lane has nothing accepted and not stored.
func (l *lane) idle() bool { return len(l.flights) == 0 && len(l.pend) == 0 && len(l.retry) == 0 }

func (p *publisher) lane(scope, subj, qname string) *lane {
	l := p.lanes[subj]
	if l == nil {
		l = &lane{subj: subj, qname: qname, scope: scope}
		p.lanes[subj] = l
	}
	return l
}

// enqueue accepts data for queue qname of host scope scope (subject subj)
// and publishes it as soon as the lane allows. It waits while the
// publisher is full.
func (p *publisher) enqueue(ctx context.Context, scope, subj, qname string, data []byte, id string) error {
	p.mu.Lock()
	for p.msgs > 0 && (p.msgs >= p.maxMsgs || p.bytes+len(data) > asyncMaxBytes) {
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room, waiting := p.room, p.msgs
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return fmt.Errorf("transit: send to %q: waiting for room among %d messages not yet stored by the bus: %w", qname, waiting, ctx.Err())
		case <-p.b.ctx.Done():
			return fmt.Errorf("transit: send to %q: %w", qname, ErrClosed)
		}
		p.mu.Lock()
	}
	l := p.lane(scope, subj, qname)
	l.pend = append(l.pend, data)
	l.pendBytes += len(data)
	if id != "" {
		l.solo = append(l.solo, soloMsg{pos: l.next, id: id})
	}
	l.next++
	p.busy[l] = struct{}{}
	p.msgs++
	p.bytes += len(data)
	p.pumpLocked(l)
	return nil
}

// pumpLocked publishes what lane l may publish now. Called with p.mu
// held; returns with it released. Publishing happens without the lock
// (the JetStream client may call back into the publisher while holding
// its own lock), one goroutine per lane at a time, so a lane's bus
// messages leave in order.
func (p *publisher) pumpLocked(l *lane) {
	if l.pumping {
		p.mu.Unlock()
		return
	}
	l.pumping = true
	for {
		f := p.take(l)
		if f == nil {
			break
		}
		p.mu.Unlock()
		_, err := p.b.js.PublishMsgAsync(f.msg)
		p.mu.Lock()
		if err != nil && l.remove(f.msg) != nil {
			if p.again(l, f, err) {
				break // a retry is scheduled
			}
			p.finish(l, f, err)
		}
	}
	l.pumping = false
	p.mu.Unlock()
}

// retriable reports whether a publish that failed with err may not have
// reached the bus for a reason that passes (a restart, a slow answer).
func retriable(err error) bool {
	for _, e := range []error{nats.ErrDisconnected, nats.ErrNoResponders, nats.ErrTimeout,
		nats.ErrReconnectBufExceeded, nats.ErrConnectionReconnecting,
		jetstream.ErrNoStreamResponse, jetstream.ErrAsyncPublishTimeout} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// again schedules flight f of lane l, which failed with err, to be
// published again if the failure may pass (a full queue: within
// FullWait); p.mu held, f removed from l.flights. It returns false if f
// failed for good.
func (p *publisher) again(l *lane, f *flight, err error) bool {
	full := errors.Is(classify(err, l.qname), ErrFull)
	if p.b.nc.IsClosed() || (!full && !retriable(err)) {
		return false
	}
	if full {
		now := time.Now()
		if l.fullSince.IsZero() {
			l.fullSince = now
		}
		if now.Sub(l.fullSince) >= p.b.opts.FullWait {
			return false
		}
	}
	p.inflight--
	f.attempts++
	p.republished.Add(1)
	i := 0
	for i < len(l.retry) && l.retry[i].from < f.from {
		i++
	}
	l.retry = append(l.retry, nil)
	copy(l.retry[i+1:], l.retry[i:])
	l.retry[i] = f
	delay := time.Duration(0) // a dropped connection: into the reconnect buffer at once
	switch {
	case full: // a refusal costs the bus little: look for room often
		delay = min(5*time.Millisecond<<min(f.attempts, 6), 250*time.Millisecond)
	case !errors.Is(err, nats.ErrDisconnected):
		delay = min(50*time.Millisecond<<min(f.attempts, 6), 2*time.Second)
	}
	// Read under p.mu: the flight may fail again (and count another
	// attempt) before this goroutine logs.
	n, attempts := f.n, f.attempts
	p.goTracked(func() {
		p.b.log.Debug("asynchronous send not confirmed by the bus; sending it again", "queue", l.qname,
			"messages", n, "attempt", attempts, "err", err)
		if delay > 0 {
			time.Sleep(delay)
		}
		p.mu.Lock()
		p.pumpLocked(l)
		p.pumpStarved()
	})
	return true
}

// report logs a failed send. The log may itself be sent through this
// Transit (out-of-band records to a queue), so it never happens under
// p.mu nor on the goroutine that processes the bus' acknowledgements:
// a send waiting for room there would wait forever.
func (p *publisher) report(qname string, n int, err error) {
	p.goTracked(func() {
		p.b.log.Error("asynchronous send failed", "queue", qname, "messages", n, "err", err)
	})
}

// goTracked runs f on a goroutine that stop waits for (once stop began,
// f still runs, untracked: it is short and the connection is closing).
func (p *publisher) goTracked(f func()) {
	p.gmu.Lock()
	if p.stopped {
		p.gmu.Unlock()
		go f()
		return
	}
	p.pumps.Add(1)
	p.gmu.Unlock()
	go func() {
		defer p.pumps.Done()
		f()
	}()
}

// stop waits for the goroutines started by callbacks.
func (p *publisher) stop() {
	p.gmu.Lock()
	p.stopped = true
	p.gmu.Unlock()
	p.pumps.Wait()
}

// take returns the next bus message lane l may publish, marking it in
// flight, or nil. p.mu held.
func (p *publisher) take(l *lane) *flight {
	if len(l.retry) > 0 {
		// What the bus did not confirm goes first, once nothing else of
		// the lane is in flight (order).
		if len(l.flights) > 0 {
			return nil
		}
		if p.inflight >= busMaxInflight {
			if !l.starved {
				l.starved = true
				p.starved = append(p.starved, l)
			}
			return nil
		}
		f := l.retry[0]
		copy(l.retry, l.retry[1:])
		l.retry[len(l.retry)-1] = nil
		l.retry = l.retry[:len(l.retry)-1]
		l.flights = append(l.flights, f)
		p.inflight++
		return f
	}
	if len(l.pend) == 0 {
		return nil
	}
	if len(l.flights) > 0 {
		full := len(l.pend) >= batchMaxMembers || l.pendBytes >= p.maxBatch
		if !full || len(l.flights) >= laneMaxInflight {
			return nil // goes out when the bus acknowledges the one in flight
		}
	}
	if p.inflight >= busMaxInflight {
		if !l.starved {
			l.starved = true
			p.starved = append(p.starved, l)
		}
		return nil
	}
	from := l.next - uint64(len(l.pend))
	limit, id := min(len(l.pend), batchMaxMembers), ""
	if len(l.solo) > 0 {
		// A message with an ID of its own goes out alone: the messages
		// before it go without it.
		if s := l.solo[0]; s.pos == from {
			limit, id = 1, s.id
			l.solo[0] = soloMsg{}
			l.solo = l.solo[1:]
		} else {
			limit = min(limit, int(s.pos-from))
		}
	}
	n, total := 0, 0
	for n < limit && (n == 0 || total+len(l.pend[n]) <= p.maxBatch) {
		total += len(l.pend[n])
		n++
	}
	f := &flight{msg: encodeBatch(l.subj, l.pend[:n], total), from: from, n: n, bytes: total}
	// The message ID is kept by every publish again of f.
	if id != "" {
		f.msg.Header = nats.Header{jetstream.MsgIDHeader: []string{id}}
	} else {
		p.setMsgID(f.msg)
	}
	rest := copy(l.pend, l.pend[n:])
	clear(l.pend[rest:])
	l.pend = l.pend[:rest]
	l.pendBytes -= total
	l.flights = append(l.flights, f)
	p.inflight++
	return f
}

// remove takes the flight of bus message m out of the lane.
func (l *lane) remove(m *nats.Msg) *flight {
	for i, f := range l.flights {
		if f.msg == m {
			copy(l.flights[i:], l.flights[i+1:])
			l.flights[len(l.flights)-1] = nil
			l.flights = l.flights[:len(l.flights)-1]
			return f
		}
	}
	return nil
}

// finish records the outcome of flight f of lane l. p.mu held.
func (p *publisher) finish(l *lane, f *flight, err error) {
	p.inflight--
	p.msgs -= f.n
	p.bytes -= f.bytes
	if l.idle() {
		delete(p.busy, l)
	}
	if err != nil {
		err = classify(err, l.qname)
		if f.n > 1 {
			err = fmt.Errorf("%w (%d messages in one bus message)", err, f.n)
		}
		p.report(l.qname, f.n, err)
		if len(p.errs) < maxAsyncKept {
			p.errs = append(p.errs, err)
		} else {
			p.lost++
		}
	}
	if p.room != nil {
		close(p.room)
		p.room = nil
	}
	if p.progress != nil {
		close(p.progress)
		p.progress = nil
	}
}

// acked is the JetStream client's callback for a stored bus message.
func (p *publisher) acked(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	p.mu.Lock()
	l := p.lanes[m.Subject]
	var f *flight
	if l != nil {
		f = l.remove(m)
	}
	if f == nil {
		p.mu.Unlock()
		return
	}
	l.fullSince = time.Time{} // the queue had room
	p.finish(l, f, nil)
	p.pumpLocked(l)
	p.pumpStarved()
}

// failed is the JetStream client's callback for a bus message that was
// not stored. It may be called with the client's lock held (ack
// timeout), so what the lane may publish next goes out from another
// goroutine.
func (p *publisher) failed(_ jetstream.JetStream, m *nats.Msg, err error) {
	p.mu.Lock()
	l := p.lanes[m.Subject]
	var f *flight
	if l != nil {
		f = l.remove(m)
	}
	if f == nil {
		p.mu.Unlock()
		return
	}
	if p.again(l, f, err) {
		p.mu.Unlock()
		return
	}
	if errors.Is(classify(err, l.qname), ErrFull) && !p.b.nc.IsClosed() {
		// Still in flight for Flush (and ahead of the lane's later
		// messages) until its messages are in the dead-letter queue.
		l.flights = append(l.flights, f)
		p.mu.Unlock()
		p.goTracked(func() { p.deadLetter(l, f, err) })
		return
	}
	p.finish(l, f, err)
	p.mu.Unlock()
	p.goTracked(func() {
		p.mu.Lock()
		p.pumpLocked(l)
		p.pumpStarved()
	})
}

// deadLetter moves the queue messages of flight f of lane l, which the
// bus refused because the lane's queue stayed full for FullWait (err),
// to the dead-letter queue of this process' host scope, each with
// .ipc_transit_meta.dead_letter {reason, queue, host, time}, and then
// completes f: without error if every message is there. f stays in
// l.flights meanwhile. Not under p.mu.
func (p *publisher) deadLetter(l *lane, f *flight, err error) {
	opts := p.b.opts
	why := err.Error()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		why = apiErr.Description // "maximum messages per subject exceeded", "maximum bytes exceeded"
	}
	reason := fmt.Sprintf("queue %s (host %s) stayed full for %v, the send could not be stored there (%s)",
		l.qname, l.scope, opts.FullWait, why)
	members := [][]byte{f.msg.Data}
	if f.n > 1 {
		var serr error
		if members, serr = splitBatch(f.msg.Data, f.n); serr != nil {
			members = nil // built by encodeBatch: cannot happen
			reason += "; its batch could not be split: " + serr.Error()
		}
	}
	// Bounded as the wait for room: a dead-letter queue that stays full
	// fails the send (Flush reports it) instead of holding every flush of
	// this process. Not bound to the bus' context: Close flushes, and
	// this is part of it.
	ctx, cancel := context.WithTimeout(context.Background(), max(opts.FullWait, time.Second))
	defer cancel()
	moved := 0
	var lastErr error
	if l.qname == DeadLetterQueue && l.scope == opts.Host {
		members, lastErr = nil, errors.New("it is the dead-letter queue")
	}
	for _, data := range members {
		if lastErr = p.deadLetterOne(ctx, l, data, reason); lastErr != nil {
			break
		}
		moved++
	}
	var ferr error
	if moved < f.n {
		ferr = fmt.Errorf("%s; moving it to %s failed too (%d of %d messages moved): %w",
			reason, DeadLetterQueue, moved, f.n, lastErr)
	} else {
		p.b.log.Warn("a send to a full queue moved to the dead-letter queue", "queue", l.qname, "host", l.scope,
			"messages", f.n, "reason", reason)
	}
	p.mu.Lock()
	if l.remove(f.msg) == nil {
		p.mu.Unlock()
		return
	}
	p.finish(l, f, ferr)
	p.pumpLocked(l)
	p.pumpStarved()
}

// deadLetterOne stores one queue message (its JSON, data) of lane l in the
// dead-letter queue with the reason, retrying until it is stored or ctx
// ends.
func (p *publisher) deadLetterOne(ctx context.Context, l *lane, data []byte, reason string) error {
	info := map[string]any{
		"reason": reason,
		"queue":  l.qname,
		"host":   l.scope,
		"time":   float64(time.Now().UnixNano()) / 1e9,
	}
	m, err := unmarshal(data)
	if err != nil {
		// Not a JSON object (cannot happen: it was marshalled by send): the
		// reason alone, with the bytes.
		info["data"] = string(data)
		m = message.Message{}
	}
	m.EnsureMeta()["dead_letter"] = info
	out, err := marshal(m)
	if err != nil || len(out) > MaxMessageBytes {
		out, _ = marshal(message.Message{message.MetaKey: map[string]any{"dead_letter": info}})
	}
	delay := 10 * time.Millisecond
	for {
		err := p.b.publish(ctx, p.b.opts.Host, DeadLetterQueue, out, true, "")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// pumpStarved gives free bus slots to the lanes waiting for one, oldest
// first.
func (p *publisher) pumpStarved() {
	for {
		p.mu.Lock()
		if len(p.starved) == 0 || p.inflight >= busMaxInflight {
			p.mu.Unlock()
			return
		}
		l := p.starved[0]
		p.starved[0] = nil
		p.starved = p.starved[1:]
		l.starved = false
		p.pumpLocked(l)
	}
}

// wait waits until every message accepted so far by the given lanes (all
// when subj is "") is stored or failed.
func (p *publisher) wait(ctx context.Context, subj string) error {
	type mark struct {
		l   *lane
		pos uint64
	}
	var marks []mark
	p.mu.Lock()
	if subj != "" {
		if l := p.lanes[subj]; l != nil && l.completed() < l.next {
			marks = append(marks, mark{l, l.next})
		}
	} else {
		for l := range p.busy {
			if l.completed() < l.next {
				marks = append(marks, mark{l, l.next})
			}
		}
	}
	for {
		for len(marks) > 0 && marks[0].l.completed() >= marks[0].pos {
			marks = marks[1:]
		}
		if len(marks) == 0 {
			p.mu.Unlock()
			return nil
		}
		if p.progress == nil {
			p.progress = make(chan struct{})
		}
		progress := p.progress
		left := 0
		for _, m := range marks {
			left += int(m.pos - m.l.completed())
		}
		p.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("transit: flush: %d sends not acknowledged yet: %w", left, ctx.Err())
		}
		p.mu.Lock()
	}
}

// takeErrors returns the failures since the previous call.
func (p *publisher) takeErrors() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs, lost := p.errs, p.lost
	p.errs, p.lost = nil, 0
	if lost > 0 {
		errs = append(errs, fmt.Errorf("transit: and %d more failed sends", lost))
	}
	return errs
}
