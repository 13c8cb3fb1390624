package transit_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// next returns the next delivery of c, failing the test if none comes
// before ctx ends.
func next(ctx context.Context, t *testing.T, c *transit.Consumer) *transit.Delivery {
	t.Helper()
	select {
	case d, ok := <-c.C():
		if !ok {
			t.Fatal("consumer closed")
		}
		return d
	case <-ctx.Done():
		t.Fatalf("no delivery: %v", ctx.Err())
	}
	return nil
}

// expect takes the deliveries of n = from..to-1 in order from c,
// acknowledging each.
func expect(ctx context.Context, t *testing.T, c *transit.Consumer, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		d := next(ctx, t, c)
		if n, _ := message.Int(d.Msg["n"]); n != int64(i) {
			t.Fatalf("got n=%d, want %d (FIFO, once each)", n, i)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}

// sendRange sends n = from..to-1 to qname synchronously, one bus message
// each, on its own goroutine; the returned channel gets its error.
func sendRange(ctx context.Context, tr *transit.Transit, qname string, from, to int) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for i := from; i < to; i++ {
			if err := tr.InProcess().SendWait(ctx, qname, message.Message{"n": i}, transit.HostSendOptions{BusOnly: true}); err != nil {
				errc <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		errc <- nil
	}()
	return errc
}

// countPulls counts the pull requests tr's consumers send from now on.
func countPulls(t *testing.T, tr *transit.Transit) func() int64 {
	t.Helper()
	pulls, err := transit.CountPulls(tr)
	if err != nil {
		t.Fatal(err)
	}
	return pulls
}

// An idle consumer holds one pull request at a time and renews it when it
// expires. A message stored at any moment, also between the expiry of one
// request and the arrival of the next, is delivered: the bus keeps it and
// serves it to the next request (no wake-up to lose), once and in order.
func TestIdleConsumerAcrossPullRenewals(t *testing.T) {
	restore := transit.SetPullWait(20 * time.Millisecond)
	defer restore()
	tr := open(t, busDir(t), transit.Options{})
	pulls := countPulls(t, tr)
	ctx := ctxT(t, 60*time.Second)
	c, err := tr.Consume(ctx, "sleepy")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	// One message after each of a few renewals.
	for i := range 5 {
		p := pulls()
		waitFor(t, 10*time.Second, func() error {
			if got := pulls(); got < p+2 {
				return fmt.Errorf("%d pull requests, want at least %d: the idle consumer does not renew", got, p+2)
			}
			return nil
		})
		if err := <-sendRange(ctx, tr, "sleepy", i, i+1); err != nil {
			t.Fatal(err)
		}
		expect(ctx, t, c, i, i+1)
	}
	// Messages stored one by one while requests keep expiring (each
	// send waits for the bus, ~a millisecond: several renewals pass).
	errc := sendRange(ctx, tr, "sleepy", 5, 400)
	expect(ctx, t, c, 5, 400)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A connection restore signalled while the consumer's pull request is
// still alive at the bus: the consumer takes the queue over again and asks
// again from a new inbox (the old request goes with the old inbox, and
// whatever it brought comes again after the reset). Nothing is dropped or
// delivered twice, and the order holds, also beyond MaxAckPending.
func TestConsumerOverlappingPullRequests(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{AckWait: 300 * time.Millisecond})
	pulls := countPulls(t, tr)
	ctx := ctxT(t, 90*time.Second)
	c, err := tr.Consume(ctx, "overlap")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	base := pulls()
	waitFor(t, 10*time.Second, func() error {
		if pulls() < base+1 {
			return fmt.Errorf("no pull request yet")
		}
		return nil
	})
	for k := range int64(3) {
		transit.SignalReconnect(tr)
		waitFor(t, 10*time.Second, func() error {
			if got := pulls(); got < base+2+k {
				return fmt.Errorf("%d pull requests after %d restore signals, want %d", got-base, k+1, k+2)
			}
			return nil
		})
	}
	const n = 1100 // more than MaxAckPending (1024) and than 4 requests of 256
	errc := sendRange(ctx, tr, "overlap", 0, n)
	expect(ctx, t, c, 0, n)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		st, err := tr.Stat(ctx, "overlap")
		if err != nil || st.Msgs != 0 {
			return fmt.Errorf("queue after all were acknowledged: %+v, %v", st, err)
		}
		return nil
	})
	select {
	case d := <-c.C():
		t.Fatalf("extra delivery %v", d.Msg)
	default:
	}
}

// The pull requests of idle consumers go with a bus that dies; once the
// connection is restored, each consumer asks again at once (not only
// when its last request would have expired, a minute later).
func TestIdleConsumerAfterBusRestart(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	pulls := countPulls(t, tr)
	ctx := ctxT(t, 90*time.Second)
	c, err := tr.Consume(ctx, "phoenix")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	waitFor(t, 10*time.Second, func() error {
		if pulls() < 1 {
			return fmt.Errorf("no pull request yet")
		}
		return nil
	})
	stopBus(t, dir, syscall.SIGKILL)
	if err := <-sendRange(ctx, tr, "phoenix", 0, 3); err != nil {
		t.Fatal(err)
	}
	// Well within the default pull request expiry (60 s).
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	expect(wctx, t, c, 0, 3)
}

// A consumer takes its queue over again as soon as the connection to a
// restarted bus is restored: deliveries resume without waiting out
// AckWait (here longer than the test waits for them). What it had
// fetched and not yet acknowledged when the bus died comes first and in
// order; a message in flight at the kill may come twice (the killed bus
// may not have stored its record of the delivery, nor the
// acknowledgement), one sent after the restart only once.
func TestConsumerResumesAtOnceAfterBusRestart(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{AckWait: 5 * time.Minute})
	ctx := ctxT(t, 4*time.Minute)
	c, err := tr.Consume(ctx, "phoenix")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := <-sendRange(ctx, tr, "phoenix", 0, 300); err != nil {
		t.Fatal(err)
	}
	expect(ctx, t, c, 0, 100)
	// The consumer holds deliveries fetched and not acknowledged (its
	// pull requests ask for 256 at a time).
	stopBus(t, dir, syscall.SIGKILL)
	errc := sendRange(ctx, tr, "phoenix", 300, 400)
	// Well within AckWait: a consumer that waited for the bus to
	// redeliver what it counts as handed out would not get here in time.
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for want := int64(100); want < 400; {
		d := next(wctx, t, c)
		n, _ := message.Int(d.Msg["n"])
		switch {
		case n == want:
			want++
		case n < want && n < 300:
			// a copy of a message in flight at the kill
		default:
			t.Fatalf("got n=%d, want %d (in order; only messages sent before the kill may come twice)", n, want)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-c.C():
		t.Fatalf("extra delivery %v", d.Msg)
	default:
	}
}

// After a reconnect, a consumer whose owner never acknowledges some of
// what it handed out (an owner gives deliveries up when it cannot store
// what they caused) takes its queue over again anyway once AckWait (+1 s)
// has passed: the deliveries given up come again, and so does everything
// after them. It does not wait for their acknowledgement for ever.
func TestConsumerTakesOverAfterReconnectDespiteUnacknowledged(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{AckWait: 500 * time.Millisecond})
	ctx := ctxT(t, 90*time.Second)
	c, err := tr.Consume(ctx, "givenup")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := <-sendRange(ctx, tr, "givenup", 0, 3); err != nil {
		t.Fatal(err)
	}
	// Handed out, never acknowledged.
	for i := range 3 {
		d := next(ctx, t, c)
		if n, _ := message.Int(d.Msg["n"]); n != int64(i) {
			t.Fatalf("got n=%d, want %d", n, i)
		}
	}
	transit.SignalReconnect(tr)
	if err := <-sendRange(ctx, tr, "givenup", 3, 6); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	expect(wctx, t, c, 0, 6)
}
