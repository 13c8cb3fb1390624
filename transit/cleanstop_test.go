package transit_test

import (
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// An owner that stops cleanly (a restart, a migration) while it holds a
// message it has not acknowledged did not die handling it: the next
// owner counts no death for it. Clean stops in a row counted as deaths,
// and after MaxDeliver of them a good message went to the dead-letter
// queue as a poison.
func TestCleanStopsCountNoDeath(t *testing.T) {
	dir := busDir(t)
	const maxDeliver = 2
	tr := open(t, dir, transit.Options{MaxDeliver: maxDeliver})
	ctx := ctxT(t, 2*time.Minute)
	const q = "restarted"
	for i := 1; i <= 3; i++ {
		if err := tr.Send(ctx, q, message.Message{"n": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Owners in a row each take the first message and stop cleanly
	// before they acknowledge it; the last one handles it.
	for owner := 1; owner <= maxDeliver+2; owner++ {
		o := open(t, dir, transit.Options{MaxDeliver: maxDeliver})
		c, err := o.Consume(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-c.C():
			if got, _ := message.Int(d.Msg["n"]); got != 1 {
				t.Fatalf("owner %d got %v, want n=1 (nothing handled it yet)", owner, d.Msg)
			}
			if owner == maxDeliver+2 {
				if err := d.Ack(); err != nil {
					t.Fatal(err)
				}
			}
		case <-ctx.Done():
			t.Fatalf("owner %d got nothing", owner)
		}
		c.Stop()
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := tr.TryReceive(ctx, transit.DeadLetterQueue); err == nil {
		t.Fatalf("dead-lettered after clean stops: %v", m)
	}
}
