package transit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// dropOnce makes the consumers and receivers of queue lose, once, each
// delivery whose consumer sequence is in seqs, as the nats.go pull client
// does when a pull's context ends with messages in flight. It returns how
// many were dropped so far.
func dropOnce(t *testing.T, queue string, seqs ...uint64) func() int {
	t.Helper()
	var mu sync.Mutex
	left := map[uint64]bool{}
	for _, s := range seqs {
		left[s] = true
	}
	n := 0
	t.Cleanup(transit.DropDeliveries(func(q string, seq uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		if q != queue || !left[seq] {
			return false
		}
		delete(left, seq)
		n++
		return true
	}))
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// A delivery that never reaches the consumer (the bus counts it as handed
// out) must not be acknowledged by a later acknowledgement: the consumer
// notices the gap in the delivery sequence and takes the queue over
// again, so every message arrives, once, in order. Acknowledged with the
// later one instead, the lost delivery would be gone for good (as two
// were under `bench scale`'s load).
func TestConsumerRecoversALostDelivery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		async bool
		drop  []uint64
	}{
		{"one message per bus message", false, []uint64{3}},
		{"batches", true, []uint64{2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := open(t, busDir(t), transit.Options{})
			ctx := ctxT(t, 60*time.Second)
			const q, n = "gap.q", 1000
			for i := range n {
				send := tr.Send
				if tc.async {
					send = tr.SendAsync
				}
				if err := send(ctx, q, message.Message{"i": i}, transit.SendOptions{}); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			if err := tr.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			dropped := dropOnce(t, q, tc.drop...)
			c, err := tr.Consume(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			for next := 0; next < n; next++ {
				select {
				case d := <-c.C():
					if got, _ := message.Int(d.Msg["i"]); got != int64(next) {
						t.Fatalf("got i=%d, want %d (after %d lost deliveries)", got, next, dropped())
					}
					if err := d.Ack(); err != nil {
						t.Fatal(err)
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("message %d never came (%d deliveries lost on the way)", next, dropped())
				}
			}
			if got := dropped(); got != len(tc.drop) {
				t.Fatalf("%d deliveries were lost on the way, want %d: the test did not test", got, len(tc.drop))
			}
			waitFor(t, 10*time.Second, func() error {
				if st, err := tr.Stat(ctx, q); err != nil || st.Msgs != 0 {
					return fmt.Errorf("after handling all: got %+v, %v; want 0 waiting", st, err)
				}
				return nil
			})
		})
	}
}

// The same for single receives: a receive whose pull lost a delivery does
// not acknowledge it with the next one.
func TestReceiveRecoversALostDelivery(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const q, n = "gap.r", 6
	for i := range n {
		if err := tr.Send(ctx, q, message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dropped := dropOnce(t, q, 2, 4)
	for i := range n {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		m, err := tr.Receive(rctx, q)
		cancel()
		if err != nil {
			t.Fatalf("Receive %d: %v (%d deliveries lost on the way)", i, err, dropped())
		}
		if got, _ := message.Int(m["i"]); got != int64(i) {
			t.Fatalf("Receive %d: got i=%d (%d deliveries lost on the way)", i, got, dropped())
		}
	}
	if got := dropped(); got != 2 {
		t.Fatalf("%d deliveries were lost on the way, want 2: the test did not test", got)
	}
	if _, err := tr.TryReceive(ctx, q); err == nil {
		t.Fatal("TryReceive after all: got a message, want ErrEmpty")
	}
}

// A take-over after a gap waits for the bus to confirm the
// acknowledgements sent so far, but not for ever: when the bus never
// applies them (a cluster can lose their replication while its leader
// counts them as done, and then answers every one sent again without
// applying it), the owner takes the queue over from the bus' ack floor
// within a bounded time, and what the lost acknowledgements covered comes
// again (at least once) instead of nothing flowing.
func TestConsumerTakesOverWhenAcksAreNeverConfirmed(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 90*time.Second)
	const q, n, lostAcks = "noack.q", 200, 50
	for i := range n {
		if err := tr.Send(ctx, q, message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	// The acknowledgements of the first 50 messages never reach the bus,
	// sent again or not, and delivery 51 never reaches the consumer.
	t.Cleanup(transit.DropAcks(func(queue string, seq uint64) bool { return queue == q && seq <= lostAcks }))
	dropped := dropOnce(t, q, lostAcks+1)
	c, err := tr.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	start := time.Now()
	seen := map[int64]int{}
	for next := int64(0); next < n; {
		select {
		case d := <-c.C():
			i, _ := message.Int(d.Msg["i"])
			seen[i]++
			switch {
			case i == next:
				next++
			case i < next && i < lostAcks:
				// Delivered again after the take-over: the bus never had
				// its acknowledgement.
			default:
				t.Fatalf("got i=%d, want %d", i, next)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-time.After(40 * time.Second):
			t.Fatalf("message %d never came within 40 s (the owner waits for acknowledgements the bus never confirms; %d deliveries lost on the way)", next, dropped())
		}
	}
	if dropped() != 1 {
		t.Fatalf("%d deliveries lost on the way, want 1: the test did not test", dropped())
	}
	if seen[0] < 2 {
		t.Fatalf("message 0 came %d times, want again after the take-over from the ack floor: the test did not test", seen[0])
	}
	t.Logf("all %d messages in %v, the first %d again", n, time.Since(start).Round(time.Millisecond), lostAcks)
	waitFor(t, 20*time.Second, func() error {
		if st, err := tr.Stat(ctx, q); err != nil || st.Msgs != 0 {
			return fmt.Errorf("after handling all: got %+v, %v; want 0 waiting", st, err)
		}
		return nil
	})
}
