package host_test

import (
	"fmt"
	"testing"

	"github.com/multimodule/multimodule/host"
)

// TestCountersMoved: Moved names exactly the tasks whose counters moved
// since it last looked — a counter counted, a new counter (even at 0), or
// a task whose counters were cleared and started again — with all their
// values.
func TestCountersMoved(t *testing.T) {
	c := host.NewCounters()
	marks := map[string]host.CounterMark{}
	moved := func() string {
		t.Helper()
		return fmt.Sprint(c.Moved(marks))
	}
	c.Add("A", "passed", 2)
	c.Add("B", "passed", 1)
	if got, want := moved(), "map[A:map[passed:2] B:map[passed:1]]"; got != want {
		t.Errorf("first look: got %s, want %s", got, want)
	}
	if got := moved(); got != "map[]" {
		t.Errorf("nothing counted: got %s, want none", got)
	}
	c.Add("B", "passed", 1)
	if got, want := moved(), "map[B:map[passed:2]]"; got != want {
		t.Errorf("B counted: got %s, want %s", got, want)
	}
	c.Counter("A", "failed") // a new counter, at 0
	if got, want := moved(), "map[A:map[failed:0 passed:2]]"; got != want {
		t.Errorf("A has a new counter: got %s, want %s", got, want)
	}
	// Cleared and counting again to the same figures.
	c.Clear("B")
	c.Add("B", "passed", 2)
	if got, want := moved(), "map[B:map[passed:2]]"; got != want {
		t.Errorf("B cleared and counted again: got %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(c.Task("A")), "map[failed:0 passed:2]"; got != want {
		t.Errorf("Task(A): got %s, want %s", got, want)
	}
	if got := c.Task("None"); len(got) != 0 {
		t.Errorf("Task(None): got %v, want empty", got)
	}
}
