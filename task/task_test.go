package task_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// fakeRuntime records what a task does, for unit tests without a daemon.
type fakeRuntime struct {
	config  map[string]any
	emitted []message.Message
	recurs  map[string]time.Duration
	out     []string
}

func newFake(cfg map[string]any) *fakeRuntime {
	return &fakeRuntime{config: cfg, recurs: map[string]time.Duration{}}
}

func (f *fakeRuntime) Context() context.Context { return context.Background() }
func (f *fakeRuntime) Config() map[string]any   { return f.config }
func (f *fakeRuntime) Emit(m message.Message) error {
	f.emitted = append(f.emitted, m)
	return nil
}
func (f *fakeRuntime) Send(q, d string, m message.Message) error { return nil }
func (f *fakeRuntime) Recur(name string, d time.Duration, work func(*task.Context)) {
	f.recurs[name] = d
}
func (f *fakeRuntime) StopRecur(name string) { delete(f.recurs, name) }
func (f *fakeRuntime) StopRecurs()           { clear(f.recurs) }
func (f *fakeRuntime) Out(ch, text string, details map[string]any) {
	f.out = append(f.out, fmt.Sprintf("%s:%s:%v", ch, text, details))
}
func (f *fakeRuntime) Logger() *slog.Logger { return slog.Default() }
func (f *fakeRuntime) Process() string      { return "main" }

func TestEmitSetsSource(t *testing.T) {
	cases := []struct {
		name     string
		in       message.Message
		wantSrc  any
		wantPrev any
	}{
		{"no source yet", message.Message{"a": 1}, "T", nil},
		{"existing source moves to previous_source", message.Message{"source": "Up"}, "T", "Up"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newFake(nil)
			tc := task.NewContext("T", rt)
			if err := tc.Emit(c.in); err != nil {
				t.Fatal(err)
			}
			got := rt.emitted[0]
			if got["source"] != c.wantSrc {
				t.Errorf("source: got %v, want %v", got["source"], c.wantSrc)
			}
			if got["previous_source"] != c.wantPrev {
				t.Errorf("previous_source: got %v, want %v", got["previous_source"], c.wantPrev)
			}
		})
	}
}

func TestNamedRecurIntervalOverride(t *testing.T) {
	cases := []struct {
		name string
		cfg  map[string]any
		want time.Duration
	}{
		{"default interval", map[string]any{}, time.Second},
		{"override in seconds", map[string]any{"intervals": map[string]any{"tick": 2.5}}, 2500 * time.Millisecond},
		{"override as string", map[string]any{"intervals": map[string]any{"tick": "3"}}, 3 * time.Second},
		{"other name ignored", map[string]any{"intervals": map[string]any{"tock": 9}}, time.Second},
		{"non-positive ignored", map[string]any{"intervals": map[string]any{"tick": 0}}, time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newFake(c.cfg)
			tc := task.NewContext("T", rt)
			tc.NamedRecur("tick", time.Second, func(*task.Context) {})
			if got := rt.recurs["tick"]; got != c.want {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestOutPairs(t *testing.T) {
	rt := newFake(nil)
	tc := task.NewContext("T", rt)
	tc.Alert("hot", "cpu", 1.5, "odd")
	want := "alert:hot:map[!BADKEY:odd cpu:1.5]"
	if len(rt.out) != 1 || rt.out[0] != want {
		t.Fatalf("got %v, want [%s]", rt.out, want)
	}
}

func TestStopRecurs(t *testing.T) {
	rt := newFake(nil)
	tc := task.NewContext("T", rt)
	work := func(*task.Context) {}
	stopA := tc.NamedRecur("a", time.Second, work)
	tc.NamedRecur("b", time.Second, work)
	stopUnnamed := tc.Recur(time.Minute, work)
	if got := len(rt.recurs); got != 3 {
		t.Fatalf("scheduled: got %d jobs (%v), want 3", got, rt.recurs)
	}
	stopA()
	if _, ok := rt.recurs["a"]; ok || len(rt.recurs) != 2 {
		t.Errorf("after a's stop: got %v, want b and the unnamed job", rt.recurs)
	}
	stopA() // again: nothing more
	stopUnnamed()
	if _, ok := rt.recurs["b"]; !ok || len(rt.recurs) != 1 {
		t.Errorf("after the unnamed job's stop: got %v, want only b", rt.recurs)
	}
	tc.NamedRecur("c", time.Second, work)
	tc.StopRecurs()
	if len(rt.recurs) != 0 {
		t.Errorf("after StopRecurs: got %v, want none", rt.recurs)
	}
}

// TestRegisterManyAtInit: registering ten thousand definitions (a bench
// binary's scale tasks, at init in every process of the binary) takes
// milliseconds, and Registered has them all, sorted. Copying the sorted
// slice for every Register made it quadratic: seconds at every start.
func TestRegisterManyAtInit(t *testing.T) {
	const n = 20000
	ns := "RegisterManyTest"
	start := time.Now()
	for i := range n {
		task.Register(task.Definition{Namespace: ns, Name: fmt.Sprintf("T%05d", n-1-i), New: func() (task.Task, error) { return nil, nil }})
	}
	regs := task.Registered()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("registering %d definitions took %v, want well under a second", n, d)
	}
	var got []string
	for _, d := range regs {
		if d.Namespace == ns {
			got = append(got, d.Name)
		}
	}
	if len(got) != n || !slices.IsSorted(got) || got[0] != "T00000" {
		t.Fatalf("Registered has %d of the %d definitions (sorted: %v)", len(got), n, slices.IsSorted(got))
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a second definition of RegisterManyTest::T00007 did not panic")
			}
		}()
		task.Register(task.Definition{Namespace: ns, Name: "T00007", New: func() (task.Task, error) { return nil, nil }})
	}()
}
