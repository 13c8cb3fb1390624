package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// TestRouterForwardToFullQueue: the Router forwards a message (taken from
// its bus queue) to a bus queue that is full. The forward waits for room
// (the Router's input is not acknowledged meanwhile) and is stored once
// room frees within Options.FullWait; a queue that stays full longer
// gets the forward in the dead-letter queue, with the target and the
// reason, and only then is the input acknowledged. A publish that failed
// at once ("bus publish failed: queue full", without the message) while
// the input is acknowledged would lose the message.
func TestRouterForwardToFullQueue(t *testing.T) {
	t.Run("room frees within the bound", func(t *testing.T) {
		h, tr := fullQueueHost(t, 30*time.Second)
		ctx := t.Context()
		routeInto(t, h, tr)
		// The forward waits; the Router's input stays unacknowledged.
		if n := queueLen(t, tr, "Router"); n != 1 {
			t.Fatalf("the Router's input: %d waiting on the bus, want 1 (unacknowledged while its forward waits)", n)
		}
		if _, err := tr.TryReceive(ctx, "Sink"); err != nil { // room for one
			t.Fatal(err)
		}
		mmtest.Eventually(t, 20*time.Second, func() error {
			if n := queueLen(t, tr, "Router"); n != 0 {
				return fmt.Errorf("the Router's input is not acknowledged (%d waiting)", n)
			}
			return nil
		})
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for _, want := range []string{"filler", "routed"} {
			m, err := tr.Receive(rctx, "Sink")
			if err != nil {
				t.Fatalf("Sink: waiting for the %s message: %v", want, err)
			}
			if m["kind"] == "x" && want != "routed" || m["kind"] != "x" && want == "routed" {
				t.Fatalf("Sink: got %v, want the %s message", m, want)
			}
		}
		if m, err := tr.TryReceive(ctx, transit.DeadLetterQueue); !errors.Is(err, transit.ErrEmpty) {
			t.Fatalf("dead-letter queue: got %v (%v), want nothing", m, err)
		}
	})
	t.Run("dead-lettered after the bound", func(t *testing.T) {
		h, tr := fullQueueHost(t, 2*time.Second)
		ctx := t.Context()
		routeInto(t, h, tr)
		var dead message.Message
		mmtest.Eventually(t, 30*time.Second, func() error {
			m, err := tr.TryReceive(ctx, transit.DeadLetterQueue)
			if err != nil {
				return fmt.Errorf("dead-letter queue: %w", err)
			}
			dead = m
			return nil
		})
		info, _ := dead.Meta()["dead_letter"].(map[string]any)
		reason, _ := info["reason"].(string)
		if dead["kind"] != "x" || dead["n"] == nil || info["queue"] != "Sink" || !strings.Contains(reason, "full") {
			t.Fatalf("dead letter %v: want the routed message (kind x, n), queue Sink and a reason naming the full queue", dead)
		}
		mmtest.Eventually(t, 20*time.Second, func() error {
			if n := queueLen(t, tr, "Router"); n != 0 {
				return fmt.Errorf("the Router's input is not acknowledged (%d waiting)", n)
			}
			return nil
		})
		if n := queueLen(t, tr, "Sink"); n != 2 {
			t.Fatalf("Sink holds %d, want its 2 fillers", n)
		}
	})
}

// fullQueueHost runs a host whose bus queues (host scope "fullq") hold
// at most 2 messages and whose sends to a full one wait at most fullWait,
// with a Router that forwards {"kind": "x"} to queue Sink (no task: a bus
// queue), and fills Sink. It returns the host and a client Transit of
// the same host scope.
func fullQueueHost(t *testing.T, fullWait time.Duration) (*host.Host, *transit.Transit) {
	env := mmtest.NewEnv(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	open := func() *transit.Transit {
		octx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr, err := transit.Open(octx, transit.Options{
			StateDir:   env.StateDir,
			BusCommand: []string{exe, "bus", "-T", filepath.Join(env.StateDir, "transit")},
			Host:       "fullq",
			Capacity:   transit.Capacity{Msgs: 2},
			FullWait:   fullWait,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	// The client sends and receives through the bus: the host's own
	// Transit would put a message for the Router in its mailbox.
	tr := open()
	h, ctx := runHost(t, host.Options{
		Transit: open(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin)},
		Out:     func(ch, tk, text string, d map[string]any) { t.Logf("%s %s: %s %v", ch, tk, text, d) },
	})
	if err := h.Configure("Router", map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"kind": "x"}, "forwards": []any{map[string]any{"qname": "Sink"}}}}}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 30*time.Second, func() error {
		if !h.Settled("Router") {
			return errors.New("the Router is not hosted and caught up yet")
		}
		return nil
	})
	for i := range 2 {
		if err := tr.Send(ctx, "Sink", message.Message{"filler": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Send(ctx, "Sink", message.Message{"filler": 2}, transit.SendOptions{NonBlocking: true}); !errors.Is(err, transit.ErrFull) {
		t.Fatalf("a third message to Sink: %v, want %v", err, transit.ErrFull)
	}
	return h, tr
}

// routeInto sends the Router a message for Sink through its bus queue
// and waits until the Router handled it.
func routeInto(t *testing.T, h *host.Host, tr *transit.Transit) {
	if err := tr.Send(t.Context(), "Router", message.Message{"kind": "x", "n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 30*time.Second, func() error {
		if n := h.Counters().Get("Router", host.MetricPassedMessages); n != 1 {
			return fmt.Errorf("the Router handled %d messages, want 1", n)
		}
		return nil
	})
}

func queueLen(t *testing.T, tr *transit.Transit, qname string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := tr.Stat(ctx, qname)
	if err != nil {
		t.Fatalf("stat %s: %v", qname, err)
	}
	return st.Msgs
}
