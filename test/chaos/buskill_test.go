package chaos_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// TestBusKilledDuringStream isolates the bus kill of the chaos run: a
// sender streams to a task in the daemon at full speed while the bus is
// killed with SIGKILL again and again; what the task emits goes through
// the Router to a queue the test reads. Every message the bus accepted
// must come out (duplicates are allowed: redelivery after a crash).
//
// It takes a while (each kill costs the clients' reconnect, seconds), so
// it runs on request: MM_CHAOS_BUSKILL=1.
func TestBusKilledDuringStream(t *testing.T) {
	if os.Getenv("MM_CHAOS_BUSKILL") == "" {
		t.Skip("set MM_CHAOS_BUSKILL=1 to run (about a minute)")
	}
	env := mmtest.NewEnv(t)
	route := map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"source": In}, "forwards": []any{map[string]any{"qname": Out}},
	}}}
	env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{"Router": route, In: map[string]any{"increment_by": 1}})
	tr := env.Client()
	ctx, stop := context.WithCancel(t.Context())
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
	)
	wg.Go(func() {
		for ctx.Err() == nil {
			mu.Lock()
			seq := sent
			mu.Unlock()
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := tr.Send(sctx, In, message.Message{"seq": seq, "ct": seq}, transit.SendOptions{})
			cancel()
			if err == nil {
				mu.Lock()
				sent++
				mu.Unlock()
			}
		}
	})
	seen := map[int64]int{}
	recv := func(d time.Duration) {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			rctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			m, err := tr.Receive(rctx, Out)
			cancel()
			if err != nil {
				continue
			}
			seq, _ := message.Int(m["seq"])
			seen[seq]++
		}
	}
	kills := 8
	if v := os.Getenv("MM_CHAOS_BUSKILLS"); v != "" {
		fmt.Sscan(v, &kills)
	}
	for i := range kills {
		// Until messages flow again, then a little more.
		mmtest.Eventually(t, 60*time.Second, func() error {
			n := len(seen)
			recv(300 * time.Millisecond)
			if len(seen) == n {
				return fmt.Errorf("no output after kill %d", i)
			}
			return nil
		})
		bi, err := transit.ReadBusInfo(filepath.Join(env.StateDir, "transit"))
		if err != nil || !bi.Alive() {
			t.Fatalf("no live bus to kill (%v)", err)
		}
		_ = syscall.Kill(bi.PID, syscall.SIGKILL)
	}
	stop()
	wg.Wait()
	deadline := time.Now().Add(90 * time.Second)
	for len(seen) < sent && time.Now().Before(deadline) {
		recv(time.Second)
	}
	var missing []int
	dups := 0
	for seq := range sent {
		if seen[int64(seq)] == 0 {
			missing = append(missing, seq)
		}
		dups += max(seen[int64(seq)]-1, 0)
	}
	t.Logf("sent %d, delivered %d, duplicated %d across %d kill -9s of the bus", sent, len(seen), dups, kills)
	if len(missing) > 0 {
		t.Fatalf("lost %d messages (first %v)", len(missing), missing[:min(len(missing), 10)])
	}
}
