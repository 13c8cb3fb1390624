package host_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// TestFlushWaitsForAFlushInProgress: a flush (a runner's, before it
// acknowledges its bus messages) must not report success while what was
// sent before it is not stored, also when another flush (the host's
// periodic one) is already waiting for the same messages.
//
// A flush that took the "sends pending" mark for itself would make the
// second one find none and return at once: the runner would acknowledge
// messages whose results are still in this process, lost if it dies then
// (a daemon killed during a stream loses a batch that way).
func TestFlushWaitsForAFlushInProgress(t *testing.T) {
	env := mmtest.NewEnv(t)
	h, err := host.New(host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin)},
	})
	if err != nil {
		t.Fatal(err)
	}
	env.Send("flush_sink", message.Message{"n": 0}) // the queue exists on the bus
	env.Recv("flush_sink", 10*time.Second)
	cont := stopBus(t, env)
	ctx := t.Context()
	if err := h.Send(ctx, "flush_sink", message.Message{"n": 1}); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- h.FlushAsync(ctx) }()
	mmtest.Eventually(t, 10*time.Second, func() error {
		if !h.Flushing() {
			select {
			case err := <-first:
				t.Fatalf("the first flush returned %v before the bus was continued", err)
			default:
			}
			return errors.New("the first flush does not wait for the bus yet")
		}
		return nil
	})
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = h.FlushAsync(sctx)
	cancel()
	if err == nil {
		t.Fatal("second flush: got nil while the stopped bus had not stored the message sent before it, want it to wait")
	}
	cont()
	if err := <-first; err != nil {
		t.Fatalf("first flush after the bus continued: %v", err)
	}
	if err := h.FlushAsync(ctx); err != nil {
		t.Fatalf("flush after the first one succeeded: %v", err)
	}
	if m := env.Recv("flush_sink", 10*time.Second); m["n"] != int64(1) {
		t.Fatalf("flush_sink: got %v, want n=1", m)
	}
}

// stopBus stops the env's bus process (SIGSTOP: it stores nothing until
// continued) and returns the function that continues it, which also runs
// when the test ends.
func stopBus(t *testing.T, env *mmtest.Env) (cont func()) {
	t.Helper()
	bi, err := transit.ReadBusInfo(filepath.Join(env.StateDir, "transit"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(bi.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered asynchronously: wait until it took effect.
	mmtest.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", bi.PID))
		if err != nil {
			return err
		}
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) == 0 || f[0] != "T" {
			return fmt.Errorf("bus pid %d not stopped yet: %v", bi.PID, f[:1])
		}
		return nil
	})
	continued := false
	cont = func() {
		if !continued {
			continued = true
			_ = syscall.Kill(bi.PID, syscall.SIGCONT)
		}
	}
	t.Cleanup(cont)
	return cont
}

// TestFlushCoversForcedBusSends: a message to a task hosted here that its
// overrides send through the bus (force_non_local) is a bus send like any
// other: a flush after it waits until the bus stored it.
func TestFlushCoversForcedBusSends(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Sink", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 10*time.Second, func() error {
		if !f.h.Settled("Sink") {
			return errors.New("Sink not settled yet")
		}
		return nil
	})
	cont := stopBus(t, f.env)
	forced := message.Message{"n": 1, message.MetaKey: map[string]any{
		"overrides": map[string]any{"force_non_local": map[string]any{"Sink": true}},
	}}
	if err := f.h.Send(t.Context(), "Sink", forced); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := f.h.FlushAsync(ctx)
	cancel()
	if err == nil {
		t.Fatal("flush: got nil while the stopped bus had not stored the forced message, want it to wait")
	}
	cont()
	if err := f.h.FlushAsync(t.Context()); err != nil {
		t.Fatalf("flush after the bus continued: %v", err)
	}
	if got := f.waitMsgs(t, "Sink", 1); got[0]["n"] != int64(1) {
		t.Fatalf("Sink got %v, want n=1", got)
	}
}
