package transit_test

import (
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// TestLocalSendTSIsTheSendTime: a message that waits in a local queue
// comes out with send_ts set to the time it was sent, not the time it was
// taken, whether it is taken with Drain or handed back by Unhost; a
// message that goes into the queue carries no send_ts of an earlier send
// out of it.
func TestLocalSendTSIsTheSendTime(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	const capacity = 1000 // more than the ring holds at first: it grows
	l, err := tr.InProcess().Host("stamped", capacity)
	if err != nil {
		t.Fatal(err)
	}
	// sentAt[i]: just before message i was sent, and just after
	// message i-1 was.
	sentAt := make([]time.Time, capacity+1)
	for i := range capacity {
		sentAt[i] = time.Now()
		m := message.Message{"i": int64(i)}
		if i%2 == 1 {
			// Metadata from an earlier send, which this send replaces.
			m[message.MetaKey] = map[string]any{"send_ts": 1.5, "other": "kept"}
		}
		if _, err := tr.InProcess().Send(ctx, "stamped", m, nil, transit.HostSendOptions{SendOptions: transit.SendOptions{NonBlocking: true}}); err != nil {
			t.Fatalf("send %d of %d into a queue of %d: %v", i, capacity, capacity, err)
		}
	}
	sentAt[capacity] = time.Now()
	if _, err := tr.InProcess().Send(ctx, "stamped", message.Message{"i": int64(-1)}, nil, transit.HostSendOptions{SendOptions: transit.SendOptions{NonBlocking: true}}); err == nil {
		t.Fatalf("a send into the full queue of %d succeeded", capacity)
	}
	time.Sleep(50 * time.Millisecond) // taken well after they were sent (not a synchronisation)
	check := func(m message.Message, i int) {
		t.Helper()
		if got, _ := message.Int(m["i"]); got != int64(i) {
			t.Fatalf("message %d: got %v (out of order)", i, m)
		}
		ts, ok := m.SendTS()
		if !ok {
			t.Fatalf("message %d: no send_ts in %v", i, m)
		}
		// A millisecond of slack: the wall clock may be slewed.
		if ts.Before(sentAt[i].Add(-time.Millisecond)) || ts.After(sentAt[i+1].Add(time.Millisecond)) {
			t.Fatalf("message %d: send_ts %v, want the time of its send, between %v and %v", i, ts, sentAt[i], sentAt[i+1])
		}
		if i%2 == 1 && m.Meta()["other"] != "kept" {
			t.Fatalf("message %d: the rest of its metadata is gone: %v", i, m.Meta())
		}
	}
	var buf [64]message.Message
	next := 0
	for next < capacity/2 {
		n, ok := l.Drain(buf[:], nil)
		if !ok || n == 0 {
			t.Fatalf("Drain after %d: %d, %v", next, n, ok)
		}
		for _, m := range buf[:n] {
			check(m, next)
			next++
		}
	}
	rest, _ := tr.InProcess().Unhost("stamped")
	if len(rest) != capacity-next {
		t.Fatalf("Unhost returned %d messages, want %d", len(rest), capacity-next)
	}
	for _, m := range rest {
		check(m, next)
		next++
	}
}
