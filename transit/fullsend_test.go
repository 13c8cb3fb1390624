package transit_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// TestSendAsyncToFullQueueDeadLettered: asynchronous sends to a bus queue
// that stays full wait for room for FullWait, then each of them (also the
// members of a batch) moves to the dead-letter queue, in order, with the
// target queue and the reason; Flush waits for that and succeeds. Once
// the queue has room again, sends to it are stored there.
func TestSendAsyncToFullQueueDeadLettered(t *testing.T) {
	// The capacity is per queue: the dead-letter queue takes them all.
	const capacity = 25
	tr := open(t, busDir(t), transit.Options{Capacity: transit.Capacity{Msgs: capacity}, FullWait: time.Second})
	ctx := ctxT(t, 60*time.Second)
	for i := range capacity {
		if err := tr.Send(ctx, "full", message.Message{"filler": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	start := time.Now()
	for i := range n {
		if err := tr.SendAsync(ctx, "full", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v, want the sends dead-lettered", err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("Flush returned after %v: the sends did not wait FullWait for room", took)
	}
	for i := range n {
		m, err := tr.TryReceive(ctx, transit.DeadLetterQueue)
		if err != nil {
			t.Fatalf("dead letter %d: %v", i, err)
		}
		info, _ := m.Meta()["dead_letter"].(map[string]any)
		reason, _ := info["reason"].(string)
		if got, _ := message.Int(m["i"]); got != int64(i) || info["queue"] != "full" || info["host"] != tr.HostName() ||
			!strings.Contains(reason, "full") {
			t.Fatalf("dead letter %d: %v; want i %d, queue full, host %s and the reason", i, m, i, tr.HostName())
		}
	}
	for i := range capacity {
		m, err := tr.TryReceive(ctx, "full")
		if got, _ := message.Int(m["filler"]); err != nil || got != int64(i) {
			t.Fatalf("full: got %v (%v), want filler %d", m, err, i)
		}
	}
	if err := tr.SendAsync(ctx, "full", message.Message{"i": n}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := tr.TryReceive(ctx, "full")
	if got, _ := message.Int(m["i"]); err != nil || got != n {
		t.Fatalf("full, with room again: got %v (%v), want i %d", m, err, n)
	}
	if m, err := tr.TryReceive(ctx, transit.DeadLetterQueue); err == nil {
		t.Fatalf("dead-letter queue: %v, want nothing more", fmt.Sprint(m))
	}
}
