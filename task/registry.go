package task

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Builtin is the namespace of the framework's own tasks (Router,
// MultiModule, OutOfBand); it is always searched first.
const Builtin = "builtin"

// Definition describes a task that can be loaded.
type Definition struct {
	Namespace string // e.g. "builtin", "MultiModuleTest"; empty means Builtin
	Name      string // the task's name, which is also its queue's name
	Stateful  bool   // the task keeps state (only stateful tasks may run external)
	// New builds a fresh instance. An error (or a panic) is a load
	// failure: reported, counted, and retried later.
	New func() (Task, error)
	// Origin says where the task comes from, for status and errors
	// ("builtin", "MultiModuleTest", "/opt/tasks/Foo", …). Optional.
	Origin string
}

// Source is a place tasks come from: a namespace of compiled-in tasks or a
// directory of executables (exec tasks).
type Source interface {
	// Lookup returns the definition of task name, if this source has it.
	Lookup(name string) (Definition, bool)
	// List returns every task this source has now.
	List() []Definition
}

// Registry holds compiled-in task definitions by namespace. The package
// keeps a default one (Register, Lookup); NewRegistry gives an isolated
// one for tests.
type Registry struct {
	mu   sync.RWMutex
	defs map[string]map[string]Definition // namespace → name → def
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{defs: map[string]map[string]Definition{}}
}

var defaultRegistry = NewRegistry()

// DefaultRegistry is the registry that Register writes to.
func DefaultRegistry() *Registry { return defaultRegistry }

// Register records a task definition in the default registry. Call it from
// init; it panics on an empty name, a nil New or a duplicate, which are
// programming errors.
func Register(d Definition) { defaultRegistry.MustRegister(d) }

// NormalizeNamespace maps the spellings a -p entry may use to a namespace
// name: "MultiModuleTest::" and "MultiModuleTest" are the same.
func NormalizeNamespace(ns string) string {
	ns = strings.TrimSuffix(strings.TrimSpace(ns), "::")
	if ns == "" {
		return Builtin
	}
	return ns
}

// MustRegister records d, panicking on an invalid or duplicate definition.
func (r *Registry) MustRegister(d Definition) {
	if err := r.Register(d); err != nil {
		panic(err)
	}
}

// Register records d; it fails on an empty name, a nil New or a duplicate.
func (r *Registry) Register(d Definition) error {
	d.Namespace = NormalizeNamespace(d.Namespace)
	if d.Name == "" {
		return errors.New("task: register: empty task name")
	}
	if d.New == nil {
		return fmt.Errorf("task: register %s::%s: nil New", d.Namespace, d.Name)
	}
	if d.Origin == "" {
		d.Origin = d.Namespace
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.defs[d.Namespace]
	if ns == nil {
		ns = map[string]Definition{}
		r.defs[d.Namespace] = ns
	}
	if _, dup := ns[d.Name]; dup {
		return fmt.Errorf("task: register %s::%s: already registered", d.Namespace, d.Name)
	}
	ns[d.Name] = d
	return nil
}

// Namespaces lists the registered namespaces, sorted.
func (r *Registry) Namespaces() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for ns := range r.defs {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out
}

// Namespace returns the Source for one namespace of r. It is empty if
// nothing registered there (yet): sources stay live views.
func (r *Registry) Namespace(ns string) Source {
	return namespaceSource{r: r, ns: NormalizeNamespace(ns)}
}

type namespaceSource struct {
	r  *Registry
	ns string
}

func (s namespaceSource) Lookup(name string) (Definition, bool) {
	s.r.mu.RLock()
	defer s.r.mu.RUnlock()
	d, ok := s.r.defs[s.ns][name]
	return d, ok
}

func (s namespaceSource) List() []Definition {
	s.r.mu.RLock()
	defer s.r.mu.RUnlock()
	out := make([]Definition, 0, len(s.r.defs[s.ns]))
	for _, d := range s.r.defs[s.ns] {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Definition) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NamespacesOf lists, sorted, the namespaces of r that have a task called
// name (to tell a user which -p they may have forgotten).
func (r *Registry) NamespacesOf(name string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for ns, defs := range r.defs {
		if _, ok := defs[name]; ok {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// Describe names the namespace, for errors that list what was searched.
func (s namespaceSource) Describe() string { return s.ns }

// Describer is an optional ability of a Source: a short name for it in
// errors ("builtin", "MultiModuleTest", a directory).
type Describer interface {
	Describe() string
}

// Sources is an ordered list of task sources; the first that has a name
// wins.
type Sources []Source

// Names describes every source, in search order, without repeats: its
// Describe, else its Path (a directory of exec tasks), else its type.
func (ss Sources) Names() []string {
	var out []string
	for _, s := range ss {
		var n string
		switch d := s.(type) {
		case Describer:
			n = d.Describe()
		case interface{ Path() string }:
			n = d.Path()
		default:
			n = fmt.Sprintf("%T", s)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// ErrNotFound is wrapped by NotFoundError.
var ErrNotFound = errors.New("task: not found")

// NotFoundError says that no source has a task of that name: which
// sources were searched and, when known, the namespaces not searched that
// have it.
type NotFoundError struct {
	Name      string
	Searched  []string // Sources.Names
	Elsewhere []string // namespaces that have it but were not given (-p)
}

func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("no task %s in %s", e.Name, strings.Join(e.Searched, ", "))
	if len(e.Elsewhere) > 0 {
		msg += "; did you forget -p " + strings.Join(e.Elsewhere, " or -p ") + "?"
	}
	return msg
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// NotFound returns the error for a task name none of ss has.
func (ss Sources) NotFound(name string) *NotFoundError {
	return &NotFoundError{Name: name, Searched: ss.Names()}
}

// Lookup searches the sources in order.
func (ss Sources) Lookup(name string) (Definition, bool) {
	for _, s := range ss {
		if d, ok := s.Lookup(name); ok {
			return d, true
		}
	}
	return Definition{}, false
}

// List returns every available task, the first source winning for a name.
func (ss Sources) List() []Definition {
	seen := map[string]bool{}
	var out []Definition
	for _, s := range ss {
		for _, d := range s.List() {
			if !seen[d.Name] {
				seen[d.Name] = true
				out = append(out, d)
			}
		}
	}
	slices.SortFunc(out, func(a, b Definition) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Build constructs a task from d, turning a panic in the constructor into
// an error, and checks that a Stateful declaration agrees with d.
func Build(d Definition) (t Task, err error) {
	defer func() {
		if p := recover(); p != nil {
			t, err = nil, fmt.Errorf("task %s: constructor panicked: %v", d.Name, p)
		}
	}()
	t, err = d.New()
	if err != nil {
		return nil, fmt.Errorf("task %s: construct: %w", d.Name, err)
	}
	if t == nil {
		return nil, fmt.Errorf("task %s: construct: New returned a nil task", d.Name)
	}
	if s, ok := t.(Stateful); ok && s.Stateful() != d.Stateful {
		return nil, fmt.Errorf("task %s: declares Stateful()=%v but is registered with Stateful=%v", d.Name, s.Stateful(), d.Stateful)
	}
	return t, nil
}

// ValidateName checks a task name: 1–200 characters of letters, digits,
// '_', '-' and '.', not starting with '.' (a task's name is also its
// queue's name and its files' names).
func ValidateName(name string) error {
	if name == "" {
		return errors.New("task name is empty")
	}
	if len(name) > 200 {
		return fmt.Errorf("task name %.40q… is longer than 200 characters", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("task name %q must not start with '.'", name)
	}
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("task name %q: character %q at %d is not allowed (letters, digits, _ - . only)", name, c, i)
		}
	}
	return nil
}
