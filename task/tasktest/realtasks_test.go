package tasktest_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/examples/testtasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/task/tasktest"
	"github.com/multimodule/multimodule/tasks/routertask"
	"github.com/multimodule/multimodule/transit"
)

// build builds a registered task, as the daemon does with -p ns.
func build(t *testing.T, ns, name string) task.Task {
	t.Helper()
	def, ok := registry.Sources{registry.Default().Namespace(ns)}.Lookup(name)
	if !ok {
		t.Fatalf("no task %s::%s registered", ns, name)
	}
	tk, err := registry.Build(def)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestExample1 tests the tutorial's Example1: its 1-second job emits the
// count with the configured text, new_ct sets the count, and the count
// survives a restart.
func TestExample1(t *testing.T) {
	rec := tasktest.New("Example1", map[string]any{"outstr": "hello"})
	if err := rec.Start(build(t, testtasks.Namespace, "Example1")); err != nil {
		t.Fatal(err)
	}
	_ = rec.RunRecur("example1_emit")
	_ = rec.RunRecur("example1_emit")
	if err := rec.Message(message.Message{"new_ct": 10}); err != nil {
		t.Fatal(err)
	}
	if err := rec.Restart(build(t, testtasks.Namespace, "Example1")); err != nil {
		t.Fatal(err)
	}
	_ = rec.RunRecur("example1_emit")

	want := []message.Message{
		{"ct": int64(0), "outstr": "hello", "source": "Example1"},
		{"ct": int64(1), "outstr": "hello", "source": "Example1"},
		{"ct": int64(10), "outstr": "hello", "source": "Example1"},
	}
	if got := rec.Emitted(); !reflect.DeepEqual(got, want) {
		t.Errorf("emitted:\ngot  %v\nwant %v", got, want)
	}
	if err := rec.Message(message.Message{"new_ct": "ten"}); err == nil || !strings.Contains(err.Error(), "new_ct must be an integer") {
		t.Errorf("new_ct ten: got %v, want the handler's error", err)
	}
}

// TestIncrementer tests a task.Func fixture: it adds one to i and emits.
func TestIncrementer(t *testing.T) {
	rec := tasktest.New("Incrementer", nil)
	_ = rec.Start(build(t, testtasks.Namespace, "Incrementer"))
	_ = rec.Message(message.Message{"i": 41, "source": "StatelessProducer"})
	want := []message.Message{{"i": int64(42), "source": "Incrementer", "previous_source": "StatelessProducer"}}
	if got := rec.Emitted(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestRouter tests the built-in Router: it forwards by its routes, and a
// message that comes back to it too often is dead-lettered with one
// alert.
func TestRouter(t *testing.T) {
	rec := tasktest.New(routertask.Name, map[string]any{"max_passes": 3, "routes": []any{
		map[string]any{"match": map[string]any{"source": "Incrementer"},
			"forwards": []any{map[string]any{"qname": "Incrementer"}}},
		map[string]any{"match": map[string]any{"source": "Example1"},
			"forwards": []any{map[string]any{"qname": "Example2"}}},
	}})
	if err := rec.Start(build(t, task.Builtin, routertask.Name)); err != nil {
		t.Fatal(err)
	}
	if err := rec.Message(message.Message{"source": "Example1", "ct": 1}); err != nil {
		t.Fatal(err)
	}
	if got := rec.Sent("Example2"); len(got) != 1 || got[0]["ct"] != int64(1) {
		t.Errorf("sent to Example2: got %v, want the message with ct 1", got)
	}

	// A loop: whatever reaches Incrementer comes back as its output.
	m := message.Message{"source": "Incrementer"}
	var err error
	for range 10 {
		if err = rec.Message(m); err != nil {
			break
		}
		sent := rec.Sent("Incrementer")
		m = sent[len(sent)-1]
	}
	if err == nil || !strings.Contains(err.Error(), "dead-letter queue") {
		t.Fatalf("a loop was not refused: %v", err)
	}
	dl := rec.Sent(transit.DeadLetterQueue)
	if len(dl) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(dl))
	}
	info, _ := dl[0].Meta()["dead_letter"].(map[string]any)
	if reason, _ := info["reason"].(string); !strings.Contains(reason, router.ErrRoutingLoop.Error()) {
		t.Errorf("dead letter reason: got %q", reason)
	}
	if got := rec.Texts("alert"); len(got) != 1 || !strings.Contains(got[0], "routing loop") {
		t.Errorf("alerts: got %q, want one about the routing loop", got)
	}
}
