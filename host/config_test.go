package host_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

func TestConfigAppliedOnceByContent(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	cfg := map[string]any{"a": 1}
	if err := f.h.Configure("Probe", cfg); err != nil {
		t.Fatal(err)
	}
	// The same content again, as a different map: no second SetConfig.
	if err := f.h.Configure("Probe", map[string]any{"a": int64(1)}); err != nil {
		t.Fatal(err)
	}
	// A message is handled only after configuration; handling it proves
	// both configs were processed.
	if err := f.h.Send(context.Background(), "Probe", message.Message{"x": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Probe", 1)
	rec.mu.Lock()
	n := rec.configs["Probe"]
	rec.mu.Unlock()
	if n != 1 {
		t.Fatalf("SetConfig called %d times, want 1", n)
	}
	if err := f.h.Configure("Probe", map[string]any{"a": 2}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 5*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.configs["Probe"] != 2 {
			return fmt.Errorf("SetConfig called %d times, want 2 after a change", rec.configs["Probe"])
		}
		return nil
	})
	saved, err := f.st.LoadConfig("Probe")
	if err != nil || saved["a"] != int64(2) {
		t.Fatalf("saved config: got %v (%v), want a=2", saved, err)
	}
}

func TestRejectedConfigKeepsPrevious(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	wantRejected(t, f.h.Configure("Probe", map[string]any{"reject": true}))
	_ = f.h.Send(context.Background(), "Probe", message.Message{"x": 1})
	f.waitMsgs(t, "Probe", 1)
	// The config is applied on the task's goroutine, after Configure
	// returned; a message that came through the bus (the task catching up
	// with its queue) may be handled first.
	mmtest.Eventually(t, 10*time.Second, func() error {
		for _, o := range f.outputs() {
			if strings.HasPrefix(o, "error ") && strings.Contains(o, "keeping the previous one") {
				return nil
			}
		}
		return fmt.Errorf("no error record about the rejected config: %v", f.outputs())
	})
}

// RestoreConfigsOf applies the saved configs of the named tasks only (an
// external process follows the daemon's config changes this way): a task
// not named keeps the config it has, a name without a saved config is
// skipped.
func TestRestoreConfigsOf(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.ConfigureAll(map[string]any{
		"Probe": map[string]any{"v": "old"},
		"Sink":  map[string]any{"v": "old"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Probe", "Sink"} {
		if err := f.st.SaveConfig(name, map[string]any{"v": "new"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.h.RestoreConfigsOf([]string{"Probe", "Nobody"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"Probe": "new", "Sink": "old"} {
		cfg, ok := f.h.Config(name)
		if !ok || cfg["v"] != want {
			t.Errorf("%s: config %v, want v=%s", name, cfg, want)
		}
	}
	if _, ok := f.h.Config("Nobody"); ok {
		t.Error("Nobody, without a saved config, got one")
	}
}

// diskChecker records, at each message and each recurring run, whether
// the config it runs with ({"v": n}, n growing with each change) is saved
// in the state directory already: the saved file holds it or a later one.
type diskChecker struct {
	st      *store.Store
	bad     *[]string
	mu      *sync.Mutex
	handled *atomic.Int64
}

func (c *diskChecker) SetConfig(tc *task.Context, cfg map[string]any) error {
	tc.NamedRecur("check", time.Millisecond, func(tc *task.Context) { c.check(tc, "recurring work") })
	return nil
}

func (c *diskChecker) check(tc *task.Context, what string) {
	cfg := tc.Config()
	saved, err := c.st.LoadConfig(tc.Name())
	given, _ := message.Int(cfg["v"])
	onDisk, ok := message.Int(saved["v"])
	if err != nil || !ok || onDisk < given {
		c.mu.Lock()
		*c.bad = append(*c.bad, fmt.Sprintf("%s under %v, saved %v (%v)", what, cfg, saved, err))
		c.mu.Unlock()
	}
}

func (c *diskChecker) Message(tc *task.Context, _ message.Message) error {
	c.check(tc, "a message")
	c.handled.Add(1)
	return nil
}

// A task acts on a config — handles a message, runs its recurring work —
// only once the config is saved: what it does under a config is never
// ahead of the state directory. (It is given the config before, to say
// whether it accepts it: only an accepted config is saved.)
func TestRunningTaskConfiguredOnlyOnceSaved(t *testing.T) {
	env := mmtest.NewEnv(t)
	var mu sync.Mutex
	var bad []string
	var handled atomic.Int64
	st := env.Store()
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Checker", New: func() (task.Task, error) {
		return &diskChecker{st: st, bad: &bad, mu: &mu, handled: &handled}, nil
	}})
	h, _ := runHost(t, host.Options{
		Transit: env.Client(),
		Store:   st,
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
		Out:     func(ch, tk, text string, d map[string]any) {},
	})
	for i := range 30 {
		done := make(chan error, 1)
		go func() { done <- h.ConfigureAll(map[string]any{"Checker": map[string]any{"v": int64(i)}}) }()
		// Messages meet the change on its way.
		for range 5 {
			if err := h.Send(context.Background(), "Checker", message.Message{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mmtest.Eventually(t, 10*time.Second, func() error {
		if n := handled.Load(); n < 150 {
			return fmt.Errorf("%d of 150 messages handled", n)
		}
		return nil
	})
	mmtest.Eventually(t, 10*time.Second, func() error {
		if cfg, _ := h.Config("Checker"); cfg["v"] != int64(29) {
			return fmt.Errorf("config %v", cfg)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%d times the task acted under a config not saved yet, first: %s", len(bad), bad[0])
	}
}
