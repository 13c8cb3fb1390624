package transit_test

import (
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// TestTryReceiveRightAfterSend: a message whose synchronous send
// returned is in the queue: TryReceive right after it gets it, every
// time. The bus tells a consumer of a new message asynchronously, so the
// consumer's pending count can still say 0 at that moment.
func TestTryReceiveRightAfterSend(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 120*time.Second)
	for i := range 300 {
		if err := tr.Send(ctx, "now.q", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
		m, err := tr.TryReceive(ctx, "now.q")
		if err != nil {
			t.Fatalf("TryReceive right after send %d: %v", i, err)
		}
		if n, _ := message.Int(m["i"]); n != int64(i) {
			t.Fatalf("TryReceive after send %d: got %v", i, m)
		}
	}
}
