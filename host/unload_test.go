package host_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// gate is a task that records what it gets and holds a message with
// "hold" until released.
type gate struct {
	mu      sync.Mutex
	got     []int64
	holding chan struct{} // closed when a held message arrived
	release chan struct{}
}

func (g *gate) Message(tc *task.Context, m message.Message) error {
	n, _ := message.Int(m["n"])
	g.mu.Lock()
	g.got = append(g.got, n)
	g.mu.Unlock()
	if message.Truthy(m["hold"]) {
		close(g.holding)
		<-g.release
	}
	return nil
}

func (g *gate) seen() []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int64(nil), g.got...)
}

// TestUnloadNowLeavesFetchedMessagesOnTheBus: UnloadNow (a failsafe)
// finishes the message being handled but does not handle what the task
// had fetched from the bus: the next owner gets it, in order.
func TestUnloadNowLeavesFetchedMessagesOnTheBus(t *testing.T) {
	g := &gate{holding: make(chan struct{}), release: make(chan struct{})}
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Gate", New: func() (task.Task, error) { return g, nil }})
	env := mmtest.NewEnv(t)
	h, _ := runHost(t, host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
	})
	env.Send("Gate", message.Message{"n": 0, "hold": true})
	for i := 1; i <= 5; i++ {
		env.Send("Gate", message.Message{"n": i})
	}
	if err := h.Reconcile("Gate"); err != nil {
		t.Fatal(err)
	}
	if err := h.Configure("Gate", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.holding:
	case <-time.After(20 * time.Second):
		t.Fatal("Gate never got its first message")
	}
	unloaded := make(chan error, 1)
	go func() { unloaded <- h.UnloadNow(context.Background(), "Gate") }()
	// Released once the unload has begun (it waits for the message being
	// handled), so that what the task takes next is up to the unload.
	mmtest.Eventually(t, 20*time.Second, func() error {
		buf := make([]byte, 1<<20)
		if !bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("host.(*Host).dropBus")) {
			return fmt.Errorf("UnloadNow has not begun")
		}
		return nil
	})
	close(g.release)
	if err := <-unloaded; err != nil {
		t.Fatal(err)
	}
	if got := g.seen(); fmt.Sprint(got) != "[0]" {
		t.Fatalf("handled before the unload returned: %v, want only the message being handled [0]", got)
	}
	// The next owner (here: the same host, loading it again) gets the rest.
	if err := h.Reconcile("Gate"); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 20*time.Second, func() error {
		if got := g.seen(); fmt.Sprint(got) != "[0 1 2 3 4 5]" {
			return fmt.Errorf("handled %v, want [0 1 2 3 4 5]", got)
		}
		return nil
	})
}
