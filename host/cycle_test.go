package host_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// bouncer sends each message it gets with hops > 0 to its peer twice, one
// hop less, and counts what it handled: the messages in flight double at
// each hop, so small mailboxes fill up for sure.
type bouncer struct {
	peer    string
	handled *atomic.Int64
	order   map[int64]int64 // per origin: the last hop seen (order check)
	bad     *atomic.Int64
}

func (b *bouncer) Message(tc *task.Context, msg message.Message) error {
	b.handled.Add(1)
	id, _ := message.Int(msg["id"])
	hops, _ := message.Int(msg["hops"])
	if last, ok := b.order[id]; ok && hops > last {
		b.bad.Add(1) // hops never go up for one origin (FIFO per sender)
	}
	b.order[id] = hops
	if hops <= 0 {
		return nil
	}
	for range 2 {
		next := message.Message{"id": id, "hops": hops - 1}
		var err error
		if b.peer == "" {
			err = tc.Emit(next) // to the Router, which routes it back here
		} else {
			err = tc.Send(b.peer, next)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Tasks that send to each other, with small mailboxes and more messages
// than they hold: each waits for room in the other's full mailbox — two
// tasks sending to each other, and a task whose emits the Router routes
// back to it (as `bench exec` does with PyEcho). Waiting, they would wait
// forever (the daemon's shutdown too): the cycle is noticed and messages
// go in beyond the capacity, so every hop is handled, in order, and
// nothing is lost.
func TestSendCycleDoesNotDeadlock(t *testing.T) {
	t.Run("two tasks", func(t *testing.T) {
		testSendCycle(t, map[string]string{"PingA": "PingB", "PingB": "PingA"}, nil)
	})
	t.Run("through the Router", func(t *testing.T) {
		testSendCycle(t, map[string]string{"Echo": ""}, map[string]any{
			"Router": map[string]any{"routes": []any{map[string]any{
				"match": map[string]any{"source": "Echo"}, "forwards": []any{map[string]any{"qname": "Echo"}}}}},
		})
	})
}

func testSendCycle(t *testing.T, peers map[string]string, extra map[string]any) {
	env := mmtest.NewEnv(t)
	var handled, bad atomic.Int64
	reg := registry.New()
	var first string
	cfg := map[string]any{}
	for name, peer := range peers {
		if first == "" || name < first {
			first = name
		}
		cfg[name] = map[string]any{}
		reg.MustRegister(task.Definition{Namespace: "T", Name: name, New: func() (task.Task, error) {
			return &bouncer{peer: peer, handled: &handled, order: map[int64]int64{}, bad: &bad}, nil
		}})
	}
	h, ctx := runHost(t, host.Options{
		Transit:     env.Client(),
		Store:       env.Store(),
		Sources:     registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
		MailboxSize: 4,
		Out:         func(ch, tk, text string, d map[string]any) {},
	})
	for k, v := range extra {
		cfg[k] = v
	}
	if err := h.ConfigureAll(cfg); err != nil {
		t.Fatal(err)
	}
	// Once every task of the cycle takes local sends in its mailbox (no
	// longer catching up with its bus queue, where sends do not wait).
	mmtest.Eventually(t, 20*time.Second, func() error {
		for name := range cfg {
			if !h.Settled(name) {
				return fmt.Errorf("%s does not take messages in its mailbox yet", name)
			}
		}
		return nil
	})
	const origins, hops = 8, 9
	sent := make(chan error, 1)
	go func() {
		for i := range origins {
			if err := h.Send(ctx, first, message.Message{"id": i, "hops": hops}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	mmtest.Eventually(t, 30*time.Second, func() error {
		if got, want := handled.Load(), int64(origins*(1<<(hops+1)-1)); got != want {
			return fmt.Errorf("handled %d of %d hops", got, want)
		}
		return nil
	})
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if n := bad.Load(); n != 0 {
		t.Errorf("%d hops came out of order", n)
	}
}
