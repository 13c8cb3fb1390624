package task_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
func (f *fakeRuntime) DelRecurs(tag string) { clear(f.recurs) }
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

func TestRegistry(t *testing.T) {
	r := task.NewRegistry()
	mk := func() (task.Task, error) {
		return task.Func(func(*task.Context, message.Message) error { return nil }), nil
	}
	if err := r.Register(task.Definition{Namespace: "NS::", Name: "A", New: mk}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		def     task.Definition
		wantErr string
	}{
		{"duplicate", task.Definition{Namespace: "NS", Name: "A", New: mk}, "already registered"},
		{"empty name", task.Definition{Namespace: "NS", New: mk}, "empty task name"},
		{"nil constructor", task.Definition{Namespace: "NS", Name: "B"}, "nil New"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := r.Register(c.def)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
	ss := task.Sources{r.Namespace(task.Builtin), r.Namespace("NS")}
	if d, ok := ss.Lookup("A"); !ok || d.Namespace != "NS" {
		t.Fatalf("lookup A: got %+v %v, want namespace NS", d, ok)
	}
	if _, ok := ss.Lookup("Z"); ok {
		t.Fatal("lookup Z: found a task that was never registered")
	}
}

func TestBuildReportsFailures(t *testing.T) {
	cases := []struct {
		name    string
		def     task.Definition
		wantErr string
	}{
		{"constructor error", task.Definition{Name: "E", New: func() (task.Task, error) { return nil, fmt.Errorf("boom") }}, "boom"},
		{"constructor panic", task.Definition{Name: "P", New: func() (task.Task, error) { panic("kaboom") }}, "panicked: kaboom"},
		{"nil task", task.Definition{Name: "N", New: func() (task.Task, error) { return nil, nil }}, "nil task"},
		{"stateful mismatch", task.Definition{Name: "S", Stateful: false, New: func() (task.Task, error) { return statefulTask{}, nil }}, "Stateful()=true"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := task.Build(c.def)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
}

type statefulTask struct{}

func (statefulTask) Message(*task.Context, message.Message) error { return nil }
func (statefulTask) Stateful() bool                               { return true }

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"Example1", "a.b-c_d", strings.Repeat("x", 200)} {
		if err := task.ValidateName(ok); err != nil {
			t.Errorf("%q: got %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "a/b", "a b", strings.Repeat("x", 201), "ünï"} {
		if err := task.ValidateName(bad); err == nil {
			t.Errorf("%q: got nil, want an error", bad)
		}
	}
}

func TestNotFoundNamesTheSourcesAndTheForgottenNamespace(t *testing.T) {
	r := task.NewRegistry()
	r.MustRegister(task.Definition{Namespace: "builtin", Name: "Router", New: func() (task.Task, error) { return nil, nil }})
	r.MustRegister(task.Definition{Namespace: "MultiModuleTest", Name: "Example1", New: func() (task.Task, error) { return nil, nil }})
	ss := task.Sources{r.Namespace("builtin"), r.Namespace("builtin::")}
	if _, ok := ss.Lookup("Example1"); ok {
		t.Fatal("Example1 found in builtin")
	}
	err := ss.NotFound("Example1")
	err.Elsewhere = r.NamespacesOf("Example1")
	if got, want := err.Error(), "no task Example1 in builtin; did you forget -p MultiModuleTest?"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(err, task.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", err)
	}
	if got := r.NamespacesOf("Nothing"); len(got) != 0 {
		t.Errorf("NamespacesOf(Nothing): got %v, want none", got)
	}
}
