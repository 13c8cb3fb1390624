package tasks

import (
	"os"
	"testing"

	"github.com/multimodule/multimodule/task/registry"
)

// TestScaleTasksOnlyWhereAsked: the stock binary's processes do not
// register the scale scenario's ten thousand tasks (they made every
// process start, an external's restart among them, tens of milliseconds
// slower); RegisterScale registers them and passes them on to the
// processes started after it through ScaleEnv.
func TestScaleTasksOnlyWhereAsked(t *testing.T) {
	if os.Getenv(ScaleEnv) != "" {
		t.Skipf("%s is set in the test's environment", ScaleEnv)
	}
	bench := registry.Default().Namespace(Namespace)
	if n := len(bench.List()); n > 10 {
		t.Fatalf("namespace %s has %d tasks at start-up; want only the few every scenario uses", Namespace, n)
	}
	if _, ok := bench.Lookup(IdleName(0)); ok {
		t.Fatalf("%s registered at start-up", IdleName(0))
	}
	if _, ok := bench.Lookup("Consumer"); !ok {
		t.Fatal("Consumer not registered")
	}
	t.Setenv(ScaleEnv, "") // restored when the test ends
	RegisterScale()
	RegisterScale() // twice is once
	for _, name := range []string{IdleName(0), IdleName(MaxIdle - 1), ExtName(0), ExtName(MaxExternals - 1)} {
		d, ok := bench.Lookup(name)
		if !ok || !d.Stateful {
			t.Errorf("after RegisterScale: %s: found %v, stateful %v; want a stateful task", name, ok, d.Stateful)
		}
	}
	if got := os.Getenv(ScaleEnv); got == "" {
		t.Errorf("after RegisterScale: %s is not set for the processes started next", ScaleEnv)
	}
}
