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

	"github.com/multimodule/multimodule/message"
)

// recvQueue is what single receives (Receive, TryReceive) of one queue
// keep between calls: the rest of a bus message that carried several
// queue messages. The bus message is acknowledged when its last queue
// message is taken; until then it is kept alive (in progress). When the
// Transit closes first, the consumer's metadata records how many of its
// queue messages were taken, and the next receiver or owner starts after
// them.
type recvQueue struct {
	lock chan struct{} // one receive of the queue at a time (a mutex that respects ctx)

	cons  jetstream.Consumer
	msg   jetstream.Msg // the bus message being taken apart, or nil
	rest  []*Delivery   // its queue messages not taken yet
	taken int           // its queue messages taken (or skipped) so far
	keep  *keeper       // keeps msg in progress
}

func (b *natsBus) recvQueue(scope, qname string) *recvQueue {
	key := scope + "\x00" + qname
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.recv[key]
	if q == nil {
		q = &recvQueue{lock: make(chan struct{}, 1)}
		b.recv[key] = q
	}
	return q
}

func (b *natsBus) receive(ctx context.Context, scope, qname string, wait bool) (message.Message, error) {
	q := b.recvQueue(scope, qname)
	select {
	case q.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("transit: receive from %q: %w", qname, ctx.Err())
	}
	defer func() { <-q.lock }()
	if b.ctx.Err() != nil {
		return nil, fmt.Errorf("transit: receive from %q: %w", qname, ErrClosed)
	}
	for {
		if len(q.rest) > 0 {
			d := q.rest[0]
			q.rest[0] = nil
			q.rest = q.rest[1:]
			q.taken++
			if d.dead != "" {
				var keep func()
				if q.keep == nil { // a lone message: kept in progress while it is dead-lettered
					m := q.msg
					keep = func() { _ = m.InProgress() }
				}
				if err := b.deadLetter(ctx, ctx.Done(), scope, qname, d, keep); err != nil {
					q.taken--
					q.rest = append([]*Delivery{d}, q.rest...)
					return nil, err
				}
				if d.isLast() {
					q.drop()
				}
				continue
			}
			if d.isLast() {
				actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
				err := q.msg.DoubleAck(actx)
				cancel()
				q.drop()
				if err != nil {
					return nil, fmt.Errorf("transit: receive from %q: acknowledge message %d: %w", qname, d.Seq, err)
				}
			}
			return d.Msg, nil
		}
		if err := b.fetchOne(ctx, q, scope, qname, wait); err != nil {
			return nil, err
		}
	}
}

// beforeReceivePull, when set (by tests), runs just before a single
// receive sends its pull request to the bus.
var beforeReceivePull atomic.Pointer[func()]

// fetchOne takes the next bus message of the queue into q.
func (b *natsBus) fetchOne(ctx context.Context, q *recvQueue, scope, qname string, wait bool) error {
	cons, err := b.queueConsumer(ctx, scope, qname)
	if err != nil {
		return err
	}
	tk, err := b.takeOver(ctx, scope, cons, true)
	if err != nil {
		return err
	}
	// A receive that does not wait says the queue is empty only when the
	// bus says nothing waits in it (the consumer's pending count, from
	// the info take-over asked for, then asked again after each pull
	// that brought nothing; a count of 0 checked against the store's,
	// see pending). It never concludes so from a pull that
	// brought nothing: the client ends a no-wait pull after a second of
	// silence, and a slow bus (a large message, a loaded machine) can
	// take longer to answer. While something waits, it pulls as a
	// waiting receive does.
	pending, knowPending := tk.pending, tk.known
	for {
		if b.ctx.Err() != nil {
			return fmt.Errorf("transit: receive from %q: %w", qname, ErrClosed)
		}
		if !wait {
			// A count of 0 from the take-over's look is the consumer's
			// alone: ask the store too (pending).
			if !knowPending || pending == 0 {
				if pending, err = b.pending(ctx, cons); err != nil {
					return fmt.Errorf("transit: receive from %q: %w", qname, err)
				}
			}
			if pending == 0 {
				return fmt.Errorf("transit: receive from %q: %w", qname, ErrEmpty)
			}
			knowPending = false // the pull may take it: ask again next time
		}
		pull := 30 * time.Second
		if !wait {
			// Something waits, but another receiver's pull may be served
			// first: ask again after a shorter pull.
			pull = 5 * time.Second
		}
		fctx, fcancel := context.WithTimeout(ctx, pull)
		stop := context.AfterFunc(b.ctx, fcancel) // Close ends a waiting receive
		if f := beforeReceivePull.Load(); f != nil {
			(*f)()
		}
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		cancel := func() { stop(); fcancel() }
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return fmt.Errorf("transit: receive from %q: %w", qname, ctx.Err())
			}
			if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				// The pull ended at ctx's deadline, a moment before ctx's
				// own timer fires. Wait for it, so that the caller, which
				// asks ctx why the receive ended, hears the same answer.
				<-ctx.Done()
				return fmt.Errorf("transit: receive from %q: %w", qname, ctx.Err())
			}
			return fmt.Errorf("transit: receive from %q: %w", qname, err)
		}
		m, ok := <-batch.Messages()
		cancel()
		if !ok {
			if ctx.Err() != nil {
				return fmt.Errorf("transit: receive from %q: %w", qname, ctx.Err())
			}
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
				b.log.Debug("receive: pull ended", "queue", qname, "err", err)
			}
			continue
		}
		if dropped(qname, m) {
			continue
		}
		w := seqWatch{next: tk.delivered + 1, known: tk.known}
		if gap, want, got := w.saw(m); gap {
			// A delivery since the take-over check never arrived here (a
			// pull that ended with it in flight, or another receiver):
			// acknowledging m would acknowledge it too. Start again from
			// the ack floor; m comes again.
			b.log.Warn("receive: deliveries from the bus never reached this receiver; resetting the queue to its ack floor",
				"queue", qname, "want_consumer_seq", want, "got", got)
			rctx, rcancel := context.WithTimeout(ctx, apiTimeout)
			_, err := b.js.ResetConsumer(rctx, b.streamName(scope), cons.CachedInfo().Name)
			rcancel()
			if err != nil {
				return fmt.Errorf("transit: receive from %q: reset to the ack floor: %w", qname, err)
			}
			if tk, err = b.takeOver(ctx, scope, cons, true); err != nil {
				return err
			}
			continue
		}
		ds, skipped := b.deliveries(ctx, cons, m, &tk)
		q.cons, q.msg, q.rest, q.taken = cons, m, ds, skipped
		if len(ds) > 1 {
			q.keep = keepInProgress(m, max(b.opts.AckWait/3, 10*time.Millisecond))
		}
		return nil
	}
}

// keeper tells the bus every period that a message is still in progress,
// until stopped.
type keeper struct {
	mu      sync.Mutex
	stopped bool
	t       *time.Timer
}

func keepInProgress(m jetstream.Msg, every time.Duration) *keeper {
	return keepDoing(every, func() { _ = m.InProgress() })
}

// keepDoing calls f every period until stopped.
func keepDoing(every time.Duration, f func()) *keeper {
	k := &keeper{}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.t = time.AfterFunc(every, func() {
		f()
		k.mu.Lock()
		defer k.mu.Unlock()
		if !k.stopped {
			k.t.Reset(every)
		}
	})
	return k
}

func (k *keeper) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}

// drop forgets the bus message being taken apart (it was acknowledged).
func (q *recvQueue) drop() {
	if q.keep != nil {
		q.keep.stop()
	}
	q.msg, q.rest, q.taken, q.keep = nil, nil, 0, nil
}

// closeReceives records, for each queue left in the middle of a bus
// message, how many of its queue messages were taken, so that the next
// receiver starts after them (the bus message is not acknowledged: it is
// delivered again, to whoever takes the queue next).
func (b *natsBus) closeReceives() {
	b.mu.Lock()
	qs := make([]*recvQueue, 0, len(b.recv))
	for _, q := range b.recv {
		qs = append(qs, q)
	}
	b.mu.Unlock()
	for _, q := range qs {
		q.lock <- struct{}{}
		b.leave(q)
		<-q.lock
	}
}

// leaveReceive is closeReceives for one queue, when this process starts
// consuming it: the consumer goes on after what was received.
func (b *natsBus) leaveReceive(ctx context.Context, scope, qname string) error {
	b.mu.Lock()
	q := b.recv[scope+"\x00"+qname]
	b.mu.Unlock()
	if q == nil {
		return nil
	}
	select {
	case q.lock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("transit: consume %q: waiting for a receive: %w", qname, ctx.Err())
	}
	b.leave(q)
	<-q.lock
	return nil
}

// leave records how far q got in its bus message and forgets it; q.lock
// held.
func (b *natsBus) leave(q *recvQueue) {
	if q.msg != nil && q.taken > 0 {
		md, err := q.msg.Metadata()
		if err == nil {
			err = b.recordDone(q.cons, md.Sequence.Stream, q.taken)
		}
		if err != nil {
			b.log.Warn("record a partly received bus message; its first messages will be received again", "err", err)
		}
	}
	q.drop()
}

// pending asks the bus how many messages of cons's queue wait to be
// delivered. The consumer hears of a stored message asynchronously, so
// its own count can still be 0 right after a send returned: when it is,
// the store's count of the queue's messages (every message not yet
// acknowledged, the stream keeping messages only while unacknowledged)
// less those delivered and not acknowledged says whether one waits.
func (b *natsBus) pending(ctx context.Context, cons jetstream.Consumer) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bus consumer %s: info: %w", cons.CachedInfo().Name, err)
	}
	if info.NumPending > 0 {
		return info.NumPending, nil
	}
	subject := info.Config.FilterSubject
	st, err := b.js.Stream(ctx, info.Stream)
	if err != nil {
		return 0, fmt.Errorf("bus stream %s: %w", info.Stream, err)
	}
	si, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("bus stream %s: info of %s: %w", info.Stream, subject, err)
	}
	stored := si.State.Subjects[subject]
	if acked := uint64(max(info.NumAckPending, 0)); stored > acked {
		return stored - acked, nil
	}
	return 0, nil
}
