package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

func TestRegistry(t *testing.T) {
	r := registry.New()
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
	ss := registry.Sources{r.Namespace(task.Builtin), r.Namespace("NS")}
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
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := registry.Build(c.def)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"Example1", "a.b-c_d", strings.Repeat("x", 200)} {
		if err := registry.ValidateName(ok); err != nil {
			t.Errorf("%q: got %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "a/b", "a b", strings.Repeat("x", 201), "ünï"} {
		if err := registry.ValidateName(bad); err == nil {
			t.Errorf("%q: got nil, want an error", bad)
		}
	}
}

func TestNotFoundNamesTheSourcesAndTheForgottenNamespace(t *testing.T) {
	r := registry.New()
	r.MustRegister(task.Definition{Namespace: "builtin", Name: "Router", New: func() (task.Task, error) { return nil, nil }})
	r.MustRegister(task.Definition{Namespace: "MultiModuleTest", Name: "Example1", New: func() (task.Task, error) { return nil, nil }})
	ss := registry.Sources{r.Namespace("builtin"), r.Namespace("builtin::")}
	if _, ok := ss.Lookup("Example1"); ok {
		t.Fatal("Example1 found in builtin")
	}
	err := ss.NotFound("Example1")
	err.Elsewhere = r.NamespacesOf("Example1")
	if got, want := err.Error(), "no task Example1 in builtin; did you forget -p MultiModuleTest?"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", err)
	}
	if got := r.NamespacesOf("Nothing"); len(got) != 0 {
		t.Errorf("NamespacesOf(Nothing): got %v, want none", got)
	}
}

// TestDefaultFollowsTaskRegister: Default has what task.Register records,
// also when it is registered after Default was first read, and
// task.Register refuses what Registry.Register refuses, by panicking.
func TestDefaultFollowsTaskRegister(t *testing.T) {
	const ns = "RegistryDefaultTest"
	mk := func() (task.Task, error) {
		return task.Func(func(*task.Context, message.Message) error { return nil }), nil
	}
	src := registry.Default().Namespace(ns + "::")
	if _, ok := src.Lookup("A"); ok {
		t.Fatal("lookup A before registering: found")
	}
	task.Register(task.Definition{Namespace: ns + "::", Name: "A", Stateful: true, New: mk})
	d, ok := src.Lookup("A")
	if !ok || d.Namespace != ns || d.Origin != ns || !d.Stateful {
		t.Fatalf("lookup A: got %+v %v, want namespace and origin %s, stateful", d, ok, ns)
	}
	if got := registry.Default().NamespacesOf("A"); len(got) != 1 || got[0] != ns {
		t.Errorf("NamespacesOf(A): got %v, want [%s]", got, ns)
	}
	for _, c := range []struct {
		name    string
		def     task.Definition
		wantErr string
	}{
		{"duplicate", task.Definition{Namespace: ns, Name: "A", New: mk}, "already registered"},
		{"empty name", task.Definition{Namespace: ns, New: mk}, "empty task name"},
		{"nil constructor", task.Definition{Namespace: ns, Name: "B"}, "nil New"},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				p := recover()
				if err, _ := p.(error); err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got panic %v, want an error containing %q", p, c.wantErr)
				}
			}()
			task.Register(c.def)
		})
	}
	if err := registry.Default().Register(task.Definition{Namespace: ns, Name: "C", New: mk}); err == nil || !strings.Contains(err.Error(), "task.Register") {
		t.Errorf("Default().Register: got %v, want a refusal naming task.Register", err)
	}
	if got := len(src.List()); got != 1 {
		t.Errorf("%s lists %d tasks, want 1", ns, got)
	}
}

// TestDefaultConcurrentRegisterAndLookup: lookups in Default while
// task.Register records more (run with -race) see every task registered
// before they started.
func TestDefaultConcurrentRegisterAndLookup(t *testing.T) {
	const ns = "RegistryConcurrentTest"
	mk := func() (task.Task, error) {
		return task.Func(func(*task.Context, message.Message) error { return nil }), nil
	}
	src := registry.Default().Namespace(ns)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			task.Register(task.Definition{Namespace: ns, Name: fmt.Sprint("T", i), New: mk})
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			if got := len(src.List()); got != 200 {
				t.Fatalf("got %d tasks in %s, want 200", got, ns)
			}
			return
		default:
		}
		n := len(src.List())
		if _, ok := src.Lookup(fmt.Sprint("T", max(n-1, 0))); n > 0 && !ok {
			t.Fatalf("lookup %d of the %d listed: not found", n-1, n)
		}
	}
}

func TestEmptyNamespaceIsBuiltin(t *testing.T) {
	for _, ns := range []string{"", " ", "::", task.Builtin + "::"} {
		if got := registry.NormalizeNamespace(ns); got != task.Builtin {
			t.Errorf("NormalizeNamespace(%q): got %q, want %q", ns, got, task.Builtin)
		}
	}
}
