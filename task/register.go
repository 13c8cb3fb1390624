package task

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/multimodule/multimodule/task/internal/taskconv"
)

// Builtin is the namespace of the framework's own tasks (Router,
// MultiModule, OutOfBand); it is always searched first.
const Builtin = "builtin"

// Definition describes a task that can be loaded.
type Definition struct {
	// Namespace groups tasks for the daemon's -p option, e.g.
	// "MultiModuleTest"; a trailing "::" is dropped and empty means
	// Builtin.
	Namespace string
	Name      string // the task's name, which is also its queue's name
	// Stateful says that the task keeps state across restarts: its
	// Context.State is saved and given back. It is known before the task
	// is built, which the host needs (only stateful tasks may run
	// external). It is the only place statefulness is declared.
	Stateful bool
	// New builds a fresh instance. An error (or a panic) is a load
	// failure: reported, counted, and retried later.
	New func() (Task, error)
	// Origin says where the task comes from, for status and errors
	// ("builtin", "MultiModuleTest", "/opt/tasks/Foo", …). Optional: it
	// defaults to the namespace.
	Origin string
}

// registered is the default registry: every Definition Register
// recorded. Register appends to pending (a binary may register ten
// thousand tasks at init: copying the sorted slice for each would take
// seconds); the first Registered call after it sorts them in and replaces
// the slice (copy on write), so that Registered, which the framework
// calls for every lookup, neither locks nor copies once settled.
var registered struct {
	mu      sync.Mutex         // serializes Register and the merge
	keys    map[[2]string]bool // namespace and name of every definition: duplicates panic at once
	pending []Definition       // recorded since the last merge
	stale   atomic.Bool        // pending holds definitions defs has not
	defs    atomic.Pointer[[]Definition]
}

// Register records a task definition in the default registry, the one the
// daemon searches. Call it from init. It panics on an empty name, a nil
// New or a second definition of the same namespace and name, which are
// programming errors.
func Register(d Definition) {
	d.Namespace = taskconv.Namespace(d.Namespace)
	if err := taskconv.CheckDefinition(d.Namespace, d.Name, d.New != nil); err != nil {
		panic(err)
	}
	if d.Origin == "" {
		d.Origin = d.Namespace
	}
	registered.mu.Lock()
	defer registered.mu.Unlock()
	k := [2]string{d.Namespace, d.Name}
	if registered.keys[k] {
		panic(taskconv.Duplicate(d.Namespace, d.Name))
	}
	if registered.keys == nil {
		registered.keys = map[[2]string]bool{}
	}
	registered.keys[k] = true
	registered.pending = append(registered.pending, d)
	registered.stale.Store(true)
}

// mergeRegistered sorts the pending definitions into a new slice.
func mergeRegistered() {
	registered.mu.Lock()
	defer registered.mu.Unlock()
	if !registered.stale.Load() {
		return // another caller merged them
	}
	var old []Definition
	if p := registered.defs.Load(); p != nil {
		old = *p
	}
	defs := make([]Definition, 0, len(old)+len(registered.pending))
	defs = append(append(defs, old...), registered.pending...)
	slices.SortFunc(defs, compareDefinitions)
	registered.defs.Store(&defs)
	registered.pending = nil
	registered.stale.Store(false)
}

func compareDefinitions(a, b Definition) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Registered returns every definition recorded with Register, sorted by
// namespace and name, with Namespace and Origin filled in. The slice is
// shared: do not modify it. The framework reads it through package
// task/registry (registry.Default); a task has no use for it.
func Registered() []Definition {
	if registered.stale.Load() {
		mergeRegistered()
	}
	if p := registered.defs.Load(); p != nil {
		return *p
	}
	return nil
}
