package placement_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/multimodule/multimodule/examples/testtasks" // Counter
	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/placement"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	_ "github.com/multimodule/multimodule/tasks" // the Router
	"github.com/multimodule/multimodule/transit"
)

// memCheckpoints is a Claim store in memory with the semantics the Manager
// gives a task's checkpoint in JetStream: one holder at a time (the
// epoch), a save by an older holder fenced.
type memCheckpoints struct {
	mu    sync.Mutex
	cp    placement.Checkpoint
	saves int
}

func (s *memCheckpoints) current() placement.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cp
}

func (s *memCheckpoints) count() int64 {
	n, _ := message.Int(s.current().State["count"])
	return n
}

// claim hands the task to holder (one epoch more). With fence, the
// previous claim learns of it at once (its Lost closes); without, only
// when it next saves.
func (s *memCheckpoints) claim(holder string, prev *memClaim, fence bool) *memClaim {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cp.Holder = holder
	s.cp.Epoch++
	if prev != nil && fence {
		prev.lose()
	}
	return &memClaim{s: s, cp: s.cp, lost: make(chan struct{})}
}

type memClaim struct {
	s    *memCheckpoints
	cp   placement.Checkpoint
	lost chan struct{}
	once sync.Once
	// writeButFail: a save is written, and then reported failed (as when
	// the box dies between the write and the acknowledgements).
	writeButFail atomic.Bool
}

func (c *memClaim) lose()                            { c.once.Do(func() { close(c.lost) }) }
func (c *memClaim) Task() string                     { return "Counter" }
func (c *memClaim) Checkpoint() placement.Checkpoint { return c.cp }
func (c *memClaim) Lost() <-chan struct{}            { return c.lost }
func (c *memClaim) Save(ctx context.Context, state map[string]any, pos placement.Position) error {
	b, err := json.Marshal(state)
	if err != nil {
		return err
	}
	var copied map[string]any
	if err := json.Unmarshal(b, &copied); err != nil {
		return err
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.cp.Epoch != c.cp.Epoch {
		c.lose()
		return fmt.Errorf("save Counter: %w", placement.ErrFenced)
	}
	c.s.cp = placement.Checkpoint{Holder: c.cp.Holder, Epoch: c.cp.Epoch, Position: pos, State: copied}
	c.s.saves++
	if c.writeButFail.Load() {
		return errors.New("simulated: the box died after the write")
	}
	return nil
}

// runnerBox is a host and a TaskRunner on the test's bus, as a daemon has them.
type runnerBox struct {
	h      *host.Host
	bus    *transit.Transit
	runner *placement.TaskRunner
	outMu  sync.Mutex
	out    []string
}

func (b *runnerBox) outputs() string {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	return strings.Join(b.out, "\n")
}

func newBox(t *testing.T, env *mmtest.Env) *runnerBox {
	t.Helper()
	b := &runnerBox{}
	srcs := registry.Sources{registry.Default().Namespace(task.Builtin), registry.Default().Namespace("MultiModuleTest")}
	h, err := host.New(host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: srcs,
		Out: func(ch, tk, text string, d map[string]any) {
			b.outMu.Lock()
			b.out = append(b.out, ch+" "+tk+" "+text)
			b.outMu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ocancel()
	bus, err := transit.Open(octx, transit.Options{
		StateDir: env.StateDir, // the bus env.Client started
		Host:     placement.ClusterScope,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := placement.NewRunner(placement.RunnerOptions{Bus: bus, Host: h, Sources: srcs})
	if err != nil {
		t.Fatal(err)
	}
	b.h, b.bus, b.runner = h, bus, r
	t.Cleanup(func() {
		r.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = h.Shutdown(sctx)
		cancel()
		<-done
		_ = bus.Close()
	})
	if err := h.Configure("Counter", map[string]any{"host": "boxA"}); err != nil {
		t.Fatal(err)
	}
	return b
}

// send sends seq from..to to Counter through b's host, as a task's send
// or a Router's forward would: the task is placed, so it goes to its
// queue in the cluster scope.
func (b *runnerBox) send(t *testing.T, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := from; i <= to; i++ {
		if err := b.h.Send(ctx, "Counter", message.Message{"seq": int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func waitCount(t *testing.T, s *memCheckpoints, want int64) {
	t.Helper()
	mmtest.Eventually(t, 60*time.Second, func() error {
		if n := s.count(); n != want {
			return fmt.Errorf("saved count %d, want %d", n, want)
		}
		return nil
	})
}

func waitQueueEmpty(t *testing.T, bus *transit.Transit, qname string) {
	t.Helper()
	mmtest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stats, err := bus.Stats(ctx, transit.QueueFilter{Waiting: true, BusOnly: true})
		if err != nil {
			return err
		}
		for _, q := range stats {
			if q.Name == qname && q.Msgs > 0 {
				return fmt.Errorf("%s: %d messages not acknowledged", qname, q.Msgs)
			}
		}
		return nil
	})
}

func checkOrder(t *testing.T, s *memCheckpoints, last int64) {
	t.Helper()
	st := s.current().State
	if d, _ := message.Int(st["disorder"]); d != 0 {
		t.Errorf("%d messages counted twice or out of order (state %v)", d, st)
	}
	if l, _ := message.Int(st["last_seq"]); l != last {
		t.Errorf("last seq %d, want %d (state %v)", l, last, st)
	}
}

// A send to a placed task goes to its queue in the cluster scope, and no
// Host loads it; the runner takes it from there, counts each message
// once, and acknowledges only what a save covers.
func TestRunnerCountsPlacedTask(t *testing.T) {
	env := mmtest.NewEnv(t)
	a := newBox(t, env)
	store := &memCheckpoints{}
	c1 := store.claim("boxA", nil, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.runner.Start(ctx, "Counter", map[string]any{"host": "boxA"}, c1); err != nil {
		t.Fatal(err)
	}
	a.send(t, 1, 300)
	waitCount(t, store, 300)
	waitQueueEmpty(t, a.bus, "Counter")
	checkOrder(t, store, 300)
	if a.h.Hosts("Counter") {
		t.Error("the host loaded the placed task itself")
	}
	if got := a.runner.Tasks(); len(got) != 1 || got[0].Name != "Counter" || got[0].Handled != 300 {
		t.Errorf("Tasks() = %+v, want Counter with 300 handled", got)
	}
}

// A take-over skips the messages the checkpoint it takes over covers,
// even when the previous holder saved them and died before it
// acknowledged them; the ones it handled and did not save are handled
// again, so every message counts exactly once.
func TestRunnerTakeOverSkipsCoveredMessages(t *testing.T) {
	env := mmtest.NewEnv(t)
	a := newBox(t, env)
	store := &memCheckpoints{}
	c1 := store.claim("boxA", nil, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.runner.Start(ctx, "Counter", nil, c1); err != nil {
		t.Fatal(err)
	}
	a.send(t, 1, 100)
	waitCount(t, store, 100)
	waitQueueEmpty(t, a.bus, "Counter")
	// Saved, never acknowledged: as if boxA died right after each write.
	c1.writeButFail.Store(true)
	a.send(t, 101, 150)
	waitCount(t, store, 150)
	b := newBox(t, env)
	c2 := store.claim("boxB", c1, true)
	mmtest.Eventually(t, 30*time.Second, func() error {
		if a.runner.Runs("Counter") {
			return errors.New("boxA still runs Counter after losing it")
		}
		return nil
	})
	if err := b.runner.Start(ctx, "Counter", nil, c2); err != nil {
		t.Fatal(err)
	}
	b.send(t, 151, 200)
	waitCount(t, store, 200)
	waitQueueEmpty(t, b.bus, "Counter")
	checkOrder(t, store, 200)
	if cp := store.current(); cp.Holder != "boxB" || cp.Epoch != 2 {
		t.Errorf("checkpoint by %s epoch %d, want boxB epoch 2", cp.Holder, cp.Epoch)
	}
}

// A save fenced by a newer holder stops the task at once, with an
// alert, acknowledging nothing more: the new holder gets every message
// the fenced one handled since its last save.
func TestRunnerFencedSaveStops(t *testing.T) {
	env := mmtest.NewEnv(t)
	a := newBox(t, env)
	store := &memCheckpoints{}
	c1 := store.claim("boxA", nil, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.runner.Start(ctx, "Counter", nil, c1); err != nil {
		t.Fatal(err)
	}
	a.send(t, 1, 50)
	waitCount(t, store, 50)
	// boxB takes over; boxA learns it only from its next save.
	c2 := store.claim("boxB", c1, false)
	a.send(t, 51, 80)
	mmtest.Eventually(t, 30*time.Second, func() error {
		if a.runner.Runs("Counter") {
			return errors.New("boxA still runs Counter after a fenced save")
		}
		return nil
	})
	if !strings.Contains(a.outputs(), "alert Counter task Counter: another box holds it now") {
		t.Errorf("no alert on the fence; out-of-band records:\n%s", a.outputs())
	}
	if n := store.count(); n != 50 {
		t.Fatalf("the fenced box saved: count %d, want 50", n)
	}
	b := newBox(t, env)
	if err := b.runner.Start(ctx, "Counter", nil, c2); err != nil {
		t.Fatal(err)
	}
	waitCount(t, store, 80)
	waitQueueEmpty(t, b.bus, "Counter")
	checkOrder(t, store, 80)
}

// Stop (a move) handles what was fetched, saves, acknowledges, and
// leaves nothing behind for the next holder but the checkpoint.
func TestRunnerStopSavesAndAcknowledges(t *testing.T) {
	env := mmtest.NewEnv(t)
	a := newBox(t, env)
	store := &memCheckpoints{}
	c1 := store.claim("boxA", nil, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.runner.Start(ctx, "Counter", nil, c1); err != nil {
		t.Fatal(err)
	}
	a.send(t, 1, 200)
	mmtest.Eventually(t, 30*time.Second, func() error {
		if got := a.runner.Tasks(); len(got) == 0 || got[0].Handled == 0 {
			return errors.New("nothing handled yet")
		}
		return nil
	})
	if err := a.runner.Stop(ctx, "Counter"); err != nil {
		t.Fatal(err)
	}
	if a.runner.Runs("Counter") {
		t.Fatal("Counter still runs after Stop")
	}
	handled := store.count()
	b := newBox(t, env)
	c2 := store.claim("boxB", c1, true)
	if err := b.runner.Start(ctx, "Counter", nil, c2); err != nil {
		t.Fatal(err)
	}
	waitCount(t, store, 200)
	waitQueueEmpty(t, b.bus, "Counter")
	checkOrder(t, store, 200)
	t.Logf("boxA handled %d of 200 before the stop", handled)
}

// Configure gives a running placed task its new config between two
// messages; a config it rejects keeps the one it runs with, and is
// reported. Start of a task no source has fails, naming it.
func TestRunnerConfigure(t *testing.T) {
	env := mmtest.NewEnv(t)
	a := newBox(t, env)
	store := &memCheckpoints{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.runner.Start(ctx, "NoSuchTask", nil, store.claim("boxA", nil, false)); err == nil || !strings.Contains(err.Error(), "NoSuchTask") {
		t.Errorf("Start of an unknown task: %v, want an error naming it", err)
	}
	if err := a.runner.Configure("OtherModule", map[string]any{}); err == nil {
		t.Error("Configure of a task not running here: no error")
	}
	const out = "placed_out"
	if err := a.h.Configure("Router", map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"source": "OtherModule"}, "forwards": []any{map[string]any{"qname": out}},
	}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.h.Configure("OtherModule", map[string]any{"host": "boxA", "increment_by": 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.runner.Start(ctx, "OtherModule", map[string]any{"host": "boxA", "increment_by": 1}, store.claim("boxA", nil, false)); err != nil {
		t.Fatal(err)
	}
	myCt := func(ct int64) int64 {
		t.Helper()
		if err := a.h.Send(ctx, "OtherModule", message.Message{"ct": ct}); err != nil {
			t.Fatal(err)
		}
		m, err := env.Client().Receive(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := message.Int(m["my_ct"])
		return n
	}
	if got := myCt(1); got != 2 {
		t.Errorf("my_ct %d with increment_by 1, want 2", got)
	}
	if err := a.runner.Configure("OtherModule", map[string]any{"host": "boxA", "increment_by": 10}); err != nil {
		t.Fatal(err)
	}
	if got := myCt(1); got != 11 {
		t.Errorf("my_ct %d after increment_by 10, want 11", got)
	}
	bad := map[string]any{"host": "boxA", "increment_by": 100, "transform": map[string]any{"x": " specials/("}}
	if err := a.runner.Configure("OtherModule", bad); err != nil {
		t.Fatal(err)
	}
	if got := myCt(1); got != 11 {
		t.Errorf("my_ct %d after a rejected config, want 11 (the config it ran with)", got)
	}
	if !strings.Contains(a.outputs(), "error OtherModule task OtherModule: set config rejected, keeping the previous one") {
		t.Errorf("the rejected config is not reported; out-of-band records:\n%s", a.outputs())
	}
}

// A state transform sent to a placed task changes its state, as on a
// host, and is saved with the position that covers it.
func TestRunnerStateTransform(t *testing.T) {
	env := mmtest.NewEnv(t)
	a := newBox(t, env)
	store := &memCheckpoints{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.runner.Start(ctx, "Counter", nil, store.claim("boxA", nil, false)); err != nil {
		t.Fatal(err)
	}
	a.send(t, 1, 10)
	waitCount(t, store, 10)
	if err := a.h.Send(ctx, "Counter", message.Message{".multimodule": map[string]any{"transform": map[string]any{"count": 100}}}); err != nil {
		t.Fatal(err)
	}
	a.send(t, 11, 11)
	waitCount(t, store, 101)
	waitQueueEmpty(t, a.bus, "Counter")
}
