package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// leaseValue is a lease's value in LeasesBucket.
type leaseValue struct {
	Box   string `json:"box"`
	Epoch uint64 `json:"epoch"`
}

// errHeld reports that another box created the task's lease first.
var errHeld = errors.New("placement: the lease is held")

// fenceTries is how often a take-over re-reads a checkpoint that the
// previous holder saved between the read and the fencing write.
const fenceTries = 5

// claim is this box's hold on one placed task: its lease, renewed in
// the background, and the revision of its checkpoint that the next Save
// must find.
type claim struct {
	b    *buckets
	js   jetstream.JetStream
	task string
	box  string
	cp   Checkpoint // as taken over
	// prevHolder is the box that held the task before (its checkpoint's
	// Holder when taken over; "" the first time).
	prevHolder string
	leaseTTL   time.Duration
	log        *slog.Logger

	leaseMu  sync.Mutex
	leaseRev uint64
	leaseVal []byte

	stateMu  sync.Mutex
	stateRev uint64
	released atomic.Bool

	lost     chan struct{}
	lostOnce sync.Once
	onLost   func(*claim)

	stopRenew context.CancelFunc
	renewDone chan struct{}
}

var _ Claim = (*claim)(nil)

func (c *claim) Task() string           { return c.task }
func (c *claim) Checkpoint() Checkpoint { return c.cp }
func (c *claim) Lost() <-chan struct{}  { return c.lost }
func (c *claim) isLost() bool           { return isClosed(c.lost) }
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// takeTimings are the lease's timings.
type takeTimings struct {
	leaseTTL, leaseRenew time.Duration
}

// take creates task's lease for box and fences its checkpoint (Holder
// box, Epoch one more), so that the previous holder can save nothing
// more. It returns errHeld when another box holds the lease. The lease
// is renewed under life until the claim is released or lost.
func take(ctx, life context.Context, b *buckets, js jetstream.JetStream, box, task string, tt takeTimings, log *slog.Logger, onLost func(*claim)) (*claim, error) {
	if !validKey(task) {
		return nil, fmt.Errorf("placement: task %s: the name cannot be a key of the cluster's buckets (a '.' at an end)", task)
	}
	cp, rev, err := readCheckpoint(ctx, b.state, task)
	if err != nil {
		return nil, err
	}
	lv, _ := json.Marshal(leaseValue{Box: box, Epoch: cp.Epoch + 1})
	leaseRev, err := b.leases.Create(ctx, task, lv, jetstream.KeyTTL(tt.leaseTTL))
	if err != nil {
		if wrongRevision(err) {
			return nil, errHeld
		}
		return nil, fmt.Errorf("placement: task %s: create its lease: %w", task, err)
	}
	c := &claim{b: b, js: js, task: task, box: box, leaseTTL: tt.leaseTTL, log: log.With("task", task),
		leaseRev: leaseRev, leaseVal: lv, lost: make(chan struct{}), onLost: onLost, renewDone: make(chan struct{})}
	for i := 1; ; i++ {
		next := Checkpoint{Holder: box, Epoch: cp.Epoch + 1, Position: cp.Position, State: cp.State}
		data, err := json.Marshal(next)
		if err == nil {
			if rev == 0 {
				rev, err = b.state.Create(ctx, task, data)
			} else {
				rev, err = b.state.Update(ctx, task, data, rev)
			}
		}
		if err == nil {
			c.cp, c.stateRev, c.prevHolder = next, rev, cp.Holder
			break
		}
		if wrongRevision(err) && i < fenceTries {
			// The previous holder saved in between: take that checkpoint.
			if cp, rev, err = readCheckpoint(ctx, b.state, task); err == nil {
				continue
			}
		}
		c.release(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("placement: task %s: fence its checkpoint: %w", task, err)
	}
	// Renewals carry the epoch fenced (the lease was created before the
	// checkpoint was read again, if it was).
	c.leaseVal, _ = json.Marshal(leaseValue{Box: box, Epoch: c.cp.Epoch})
	rctx, cancel := context.WithCancel(life)
	c.stopRenew = cancel
	go c.renewLoop(rctx, tt.leaseRenew)
	return c, nil
}

// readCheckpoint is task's checkpoint and its revision (0: none yet).
func readCheckpoint(ctx context.Context, kv jetstream.KeyValue, task string) (Checkpoint, uint64, error) {
	e, err := kv.Get(ctx, task)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Checkpoint{}, 0, nil
	}
	if err != nil {
		return Checkpoint{}, 0, fmt.Errorf("placement: task %s: read its checkpoint: %w", task, err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return Checkpoint{}, 0, fmt.Errorf("placement: task %s: its checkpoint in %s (revision %d) is not a checkpoint: %w", task, StateBucket, e.Revision(), err)
	}
	return cp, e.Revision(), nil
}

// renewLoop renews the lease every period until ctx ends or the lease
// is lost: refused (another box holds it) or not renewed for a whole TTL
// (it ran out on the server, or will before this box hears back).
func (c *claim) renewLoop(ctx context.Context, period time.Duration) {
	defer close(c.renewDone)
	tick := time.NewTicker(period)
	defer tick.Stop()
	last := time.Now()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.lost:
			return
		case <-tick.C:
		}
		err := c.renew(ctx, period)
		switch {
		case err == nil:
			last, failing = time.Now(), false
		case ctx.Err() != nil:
			return
		case wrongRevision(err):
			c.markLost(c.leaseGone(ctx))
			return
		case time.Since(last) >= c.leaseTTL:
			c.markLost(fmt.Errorf("its lease was not renewed for %s and has run out: %w", time.Since(last).Round(time.Millisecond), err))
			return
		case !failing:
			failing = true
			c.log.Warn("renewing a lease failed; trying again", "err", err)
		}
	}
}

// leaseGone says what became of the lease that a renewal did not find.
func (c *claim) leaseGone(ctx context.Context) error {
	e, err := c.b.leases.Get(ctx, c.task)
	if err != nil {
		return errors.New("its lease ran out or was deleted before this box renewed it")
	}
	var v leaseValue
	_ = json.Unmarshal(e.Value(), &v)
	return fmt.Errorf("its lease is held by box %s now (epoch %d)", v.Box, v.Epoch)
}

// renew writes the lease again with a new TTL, if its last revision is
// still this box's. A refusal whose reason is this box's own earlier
// write (sent, but its answer lost) adopts that revision.
func (c *claim) renew(ctx context.Context, timeout time.Duration) error {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	for adopted := false; ; adopted = true {
		actx, cancel := context.WithTimeout(ctx, timeout)
		pa, err := c.js.PublishMsg(actx, &nats.Msg{Subject: subject(LeasesBucket, c.task), Data: c.leaseVal},
			jetstream.WithExpectLastSequencePerSubject(c.leaseRev), jetstream.WithMsgTTL(c.leaseTTL))
		cancel()
		if err == nil {
			c.leaseRev = pa.Sequence
			return nil
		}
		if !wrongRevision(err) || adopted {
			return err
		}
		e, gerr := c.b.leases.Get(ctx, c.task)
		if gerr != nil || string(e.Value()) != string(c.leaseVal) {
			return err
		}
		c.leaseRev = e.Revision()
	}
}

// Save stores the task's checkpoint by one write conditional on the
// revision this box wrote last.
func (c *claim) Save(ctx context.Context, state map[string]any, pos Position) error {
	if c.isLost() || c.released.Load() {
		return fmt.Errorf("placement: task %s: save: this box no longer holds it: %w", c.task, ErrFenced)
	}
	data, err := json.Marshal(Checkpoint{Holder: c.box, Epoch: c.cp.Epoch, Position: pos, State: state})
	if err != nil {
		return fmt.Errorf("placement: task %s: save: its state cannot be encoded as JSON: %w", c.task, err)
	}
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	for adopted := false; ; adopted = true {
		rev, err := c.b.state.Update(ctx, c.task, data, c.stateRev)
		if err == nil {
			c.stateRev = rev
			return nil
		}
		if !wrongRevision(err) {
			return fmt.Errorf("placement: task %s: save its checkpoint: %w", c.task, err)
		}
		now, nowRev, rerr := readCheckpoint(ctx, c.b.state, c.task)
		if rerr == nil && !adopted && now.Holder == c.box && now.Epoch == c.cp.Epoch {
			c.stateRev = nowRev // this box's own write, whose answer was lost
			continue
		}
		err = fmt.Errorf("placement: task %s: save: box %s holds it now (epoch %d): %w", c.task, now.Holder, now.Epoch, ErrFenced)
		if rerr != nil {
			err = fmt.Errorf("placement: task %s: save: its checkpoint was written by another box: %w", c.task, ErrFenced)
		}
		c.markLost(err)
		return err
	}
}

// markLost closes Lost once, with the reason.
func (c *claim) markLost(why error) {
	c.lostOnce.Do(func() {
		c.log.Warn("this box lost a placed task", "epoch", c.cp.Epoch, "reason", why)
		close(c.lost)
		if c.onLost != nil {
			c.onLost(c)
		}
	})
}

// release stops renewing and deletes the lease if it is still this
// box's, so that the box the task should run on takes it at once. No
// Save succeeds after it.
func (c *claim) release(ctx context.Context) {
	c.stateMu.Lock()
	c.released.Store(true)
	c.stateMu.Unlock()
	if c.stopRenew != nil {
		c.stopRenew()
		<-c.renewDone
	}
	c.leaseMu.Lock()
	rev := c.leaseRev
	c.leaseMu.Unlock()
	err := c.b.leases.Delete(ctx, c.task, jetstream.LastRevision(rev))
	switch {
	case err == nil:
	case wrongRevision(err):
		c.log.Debug("the lease was no longer this box's to release")
	default:
		c.log.Warn("releasing a lease failed: it runs out by itself", "err", err, "ttl", c.leaseTTL)
	}
}
