package host_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// TestIdleHostDoesNotWake: a host with nothing to do (an external
// process' host: no bus scan) has no timer armed. Its run loop flushes a
// send that no runner flushed, and then does not wake up until something
// happens: idle processes cost nothing.
//
// It used to wake every 50 ms (a flush ticker) and every second (the
// load-retry tick) whether or not anything waited.
func TestIdleHostDoesNotWake(t *testing.T) {
	env := mmtest.NewEnv(t)
	rec := newRecorder()
	f := newFixtureScanning(t, rec, env, -1)
	if err := f.h.Configure("Probe", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Configure("Remote", map[string]any{"is_external": true}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.h.Send(ctx, "Probe", message.Message{"n": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Probe", 1)
	// Remote is hosted elsewhere: the send goes through the bus, and
	// only the run loop flushes it.
	if err := f.h.Send(ctx, "Remote", message.Message{"n": 2}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 20*time.Second, func() error {
		if f.h.FlushPending() {
			return errors.New("the send to Remote is not flushed yet")
		}
		return nil
	})
	if m := env.Recv("Remote", 10*time.Second); m["n"] != int64(2) {
		t.Fatalf("Remote: got %v, want n=2", m)
	}
	// The window in which nothing may happen (a measurement, not a wait
	// for an event).
	w0 := f.h.LoopWakes()
	time.Sleep(1500 * time.Millisecond)
	if w := f.h.LoopWakes() - w0; w != 0 {
		t.Fatalf("the idle host's run loop woke %d times in 1.5 s, want 0", w)
	}
}

// TestStateSaveRetriedAfterFailure: a state save that failed is tried
// again (the retry timer is armed only while one failed) until it
// succeeds, and the recovery is reported.
func TestStateSaveRetriedAfterFailure(t *testing.T) {
	rec := newRecorder()
	env := mmtest.NewEnv(t)
	f := newFixture(t, rec, env)
	if err := f.h.Configure("Keeper", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 10*time.Second, func() error {
		if !f.h.Settled("Keeper") {
			return errors.New("Keeper still catching up with its bus queue")
		}
		return nil
	})
	// A directory where the state file goes: every save fails.
	block := filepath.Join(f.st.Dir(), "Keeper.state")
	if err := os.MkdirAll(filepath.Join(block, "in-the-way"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = f.h.Send(context.Background(), "Keeper", message.Message{"count": 1})
	f.waitMsgs(t, "Keeper", 1)
	mmtest.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(strings.Join(f.outputs(), "\n"), "Keeper save state:") {
			return errors.New("no failed save reported yet")
		}
		return nil
	})
	if err := os.RemoveAll(block); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(strings.Join(f.outputs(), "\n"), "Keeper state saved again after failed saves") {
			return errors.New("the state is not saved again yet")
		}
		return nil
	})
	st, err := f.st.LoadState("Keeper")
	if err != nil {
		t.Fatal(err)
	}
	if st["n"] != int64(1) {
		t.Fatalf("saved state: got %v, want n=1", st)
	}
}
