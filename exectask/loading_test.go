package exectask_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	_ "github.com/multimodule/multimodule/tasks" // the Router
)

// heldTask writes an exec task that answers its describe at once but, when
// run, withholds its hello until the file release appears in its
// directory (each run first leaves a file started.<pid> there); then it is
// ShellEcho.
func heldTask(t *testing.T, dir, name string) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
if [ "$MULTIMODULE_MODE" = describe ]; then
	printf '{"type":"hello","protocol":1,"stateful":false}\n'
	exit 0
fi
: > started.$$
while [ ! -e release ]; do sleep 0.05; done
exec %s
`, absDir(t, filepath.Join(examples, "ShellEcho")))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// hostOn runs a host over the exec tasks of dir (and the built-in ones) on
// env's bus, with the given handshake timeout; out collects its
// out-of-band records.
func hostOn(t *testing.T, env *mmtest.Env, dir string, handshake time.Duration) (*host.Host, *records) {
	t.Helper()
	out := &records{}
	src, err := exectask.Open(dir, exectask.Options{HandshakeTimeout: handshake, StopGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.New(host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), src},
		Out:     out.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		if err := h.Shutdown(sctx); err != nil {
			t.Errorf("host shutdown: %v", err)
		}
		cancel()
		<-done
		_ = src.Close()
	})
	return h, out
}

// records keeps out-of-band records as "channel task: text" lines.
type records struct {
	mu    sync.Mutex
	lines []string
}

func (r *records) add(channel, taskName, text string, _ map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, channel+" "+taskName+": "+text)
}

func (r *records) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// within runs f on its own goroutine and fails the test if it has not
// returned within d: what is tested is that nothing in f waits for a
// task's handshake.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s did not return within %v: it waits for a task's handshake", what, d)
	}
}

// TestSilentHandshakeHoldsUpNothingElse: while an exec task is in its
// handshake (here: as long as the test wants — the handshake timeout is a
// minute and the task withholds its hello), configuring tasks (the
// daemon's control queue does exactly this), loading another task,
// delivering to it, and routing to both go on. Once the held task says
// hello, it gets the messages that waited for it, in order.
func TestSilentHandshakeHoldsUpNothingElse(t *testing.T) {
	dir := t.TempDir()
	heldTask(t, dir, "Held")
	if err := os.Symlink(absDir(t, filepath.Join(examples, "ShellEcho")), filepath.Join(dir, "Healthy")); err != nil {
		t.Fatal(err)
	}
	env := mmtest.NewEnv(t)
	h, out := hostOn(t, env, dir, time.Minute)
	send := func(q string, m message.Message) error { return h.Send(context.Background(), q, m) }
	// What the tasks emit goes to out_<task>; what has "both" (and is not
	// an emit) goes to both tasks.
	var rs []any
	for _, name := range []string{"Healthy", "Held"} {
		rs = append(rs, map[string]any{
			"match":           map[string]any{"source": name},
			"forwards":        []any{map[string]any{"qname": "out_" + name}},
			".router_control": map[string]any{"short_circuit": true},
		})
	}
	rs = append(rs, map[string]any{
		"match":    map[string]any{"both": "yes"},
		"forwards": []any{map[string]any{"qname": "Held"}, map[string]any{"qname": "Healthy"}},
	})

	// Configuring the held task returns while it is in its handshake.
	within(t, wait, "configuring Held", func() error {
		return h.ConfigureAll(map[string]any{"Router": map[string]any{"routes": rs}, "Held": map[string]any{}})
	})
	started := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "started.*"))
		return m
	}
	eventually(t, wait, func() error {
		if len(started()) == 0 {
			return fmt.Errorf("Held has not been started yet")
		}
		return nil
	})

	// Another task is configured, loaded and handles messages meanwhile,
	// sent directly and through the Router, which also forwards to Held.
	within(t, wait, "configuring Healthy", func() error { return h.Configure("Healthy", map[string]any{}) })
	within(t, wait, "sending to Held", func() error { return send("Held", message.Message{"n": int64(0)}) })
	within(t, wait, "sending to Healthy", func() error { return send("Healthy", message.Message{"n": int64(0)}) })
	for i := 1; i <= 3; i++ {
		within(t, wait, "sending to the Router", func() error { return send("Router", message.Message{"both": "yes", "n": int64(i)}) })
	}
	for i := 0; i <= 3; i++ {
		m := env.Recv("out_Healthy", wait)
		if n, _ := message.Int(m["n"]); n != int64(i) || m["seen_by"] != "ShellEcho" {
			t.Fatalf("Healthy: got %v, want n=%d echoed", m, i)
		}
	}
	// All of that while Held is still in its first handshake.
	if s := started(); len(s) != 1 {
		t.Fatalf("Held was started %d times, want once (still in its first handshake): %v\nrecords:\n%s", len(s), s, out.text())
	}
	if strings.Contains(out.text(), "Held failed to load") {
		t.Fatalf("Held's load failed, want it still in its handshake; records:\n%s", out.text())
	}

	// Held says hello: it is loaded and gets what waited, in order.
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= 3; i++ {
		m := env.Recv("out_Held", wait)
		if n, _ := message.Int(m["n"]); n != int64(i) || m["source"] != "Held" {
			t.Fatalf("Held: got %v, want n=%d (the messages that waited, in order)", m, i)
		}
	}
}
