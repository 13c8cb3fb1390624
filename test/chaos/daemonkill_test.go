package chaos_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// TestDaemonKilledDuringStream isolates one fault of the chaos run: the
// daemon, hosting a stateful task and the Router, is killed with SIGKILL
// again and again while a sender streams to the task at full speed.
// Every message the bus accepted must come out (duplicates are allowed:
// redelivery after a crash).
//
// It found a loss (a few messages per 8 kills): the host acknowledged a
// task's bus delivery once the bus publishes it caused were flushed, while
// what the task emitted to the Router in the same process could still wait
// in the Router's mailbox and die with the process. The host now holds the
// acknowledgement until every in-process consequence is handled (leases,
// host/lease.go).
func TestDaemonKilledDuringStream(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode")
	}
	env := mmtest.NewEnv(t)
	route := map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"source": In}, "forwards": []any{map[string]any{"qname": Out}},
	}}}
	args := []string{"-p", "MultiModuleTest"}
	d := env.StartDaemon(args...)
	env.Configure(map[string]any{"Router": route, In: map[string]any{"increment_by": 1}})
	tr := env.Client()
	ctx, stop := context.WithCancel(t.Context())
	var (
		wg   sync.WaitGroup
		sent int
	)
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := tr.Send(ctx, In, message.Message{"seq": sent, "ct": sent}, transit.SendOptions{}); err == nil {
				sent++
			}
		}
	})
	for range 8 {
		mmtest.Eventually(t, 30*time.Second, func() error {
			st, err := tr.Stat(t.Context(), Out)
			if err != nil || st.Msgs == 0 {
				return fmt.Errorf("no output yet (%v)", err)
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond) // let the stream run between kills (pacing, not synchronisation)
		d.Kill()
		d = env.StartDaemon(args...)
	}
	stop()
	wg.Wait()
	seen := map[int64]int{}
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < sent && time.Now().Before(deadline) {
		rctx, cancel := context.WithTimeout(t.Context(), time.Second)
		m, err := tr.Receive(rctx, Out)
		cancel()
		if err != nil {
			continue
		}
		seq, _ := message.Int(m["seq"])
		seen[seq]++
	}
	var missing []int
	dups := 0
	for seq := range sent {
		if seen[int64(seq)] == 0 {
			missing = append(missing, seq)
		}
		dups += max(seen[int64(seq)]-1, 0)
	}
	t.Logf("sent %d, delivered %d, duplicated %d across 8 kill -9s of the daemon", sent, len(seen), dups)
	if len(missing) > 0 {
		t.Fatalf("lost %d messages (first %v)", len(missing), missing[:min(len(missing), 10)])
	}
}
