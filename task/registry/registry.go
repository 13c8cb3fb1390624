// Package registry is the framework's side of the task API: where the
// daemon finds the tasks it may load, and how it builds them. Task authors
// do not need it: they write a task with package task and record it with
// task.Register; hosts (package host, the daemon, package task/tasktest)
// use this package to find and build it.
//
// A Source is a place tasks come from: one namespace of compiled-in tasks
// (Registry.Namespace) or a directory of exec tasks (package exectask).
// Sources lists them in search order — "builtin" first, then the
// daemon's -p entries — and the first that has a name wins; a name none
// has is a NotFoundError that names what was searched. Default is the
// registry that task.Register fills; New gives an isolated one, for tests.
// Build turns a Definition into a running task, turning a constructor's
// panic into an error. The helpers NormalizeNamespace, IntervalOverride,
// CopyConfig and ValidateName are the conventions every host applies to
// task names, namespaces and configs.
package registry

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/internal/taskconv"
)

// Source is a place tasks come from: a namespace of compiled-in tasks or a
// directory of executables (exec tasks).
type Source interface {
	// Lookup returns the definition of task name, if this source has it.
	Lookup(name string) (task.Definition, bool)
	// List returns every task this source has now.
	List() []task.Definition
}

// Registry holds compiled-in task definitions by namespace. Default is
// the one task.Register fills; New gives an isolated one for tests.
type Registry struct {
	mu   sync.RWMutex
	defs map[string]map[string]task.Definition // namespace → name → def
	// followsTask: the registry is Default, whose definitions are
	// task.Registered(); seen is how many of them defs holds.
	followsTask bool
	seen        atomic.Int64
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{defs: map[string]map[string]task.Definition{}}
}

var defaultRegistry = &Registry{defs: map[string]map[string]task.Definition{}, followsTask: true}

// Default is the registry that task.Register records into: it always has
// every task registered so far, including those registered after Default
// was first called.
func Default() *Registry { return defaultRegistry }

// NormalizeNamespace maps the spellings a -p entry may use to a namespace
// name: "MultiModuleTest::" and "MultiModuleTest" are the same, and an
// empty one is task.Builtin.
func NormalizeNamespace(ns string) string { return taskconv.Namespace(ns) }

// MustRegister records d, panicking on an invalid or duplicate definition.
func (r *Registry) MustRegister(d task.Definition) {
	if err := r.Register(d); err != nil {
		panic(err)
	}
}

// Register records d; it fails on an empty name, a nil New or a
// duplicate. Default refuses it: its tasks come from task.Register.
func (r *Registry) Register(d task.Definition) error {
	d.Namespace = NormalizeNamespace(d.Namespace)
	if err := taskconv.CheckDefinition(d.Namespace, d.Name, d.New != nil); err != nil {
		return err
	}
	if r.followsTask {
		return fmt.Errorf("task: register %s::%s: the default registry is filled by task.Register", d.Namespace, d.Name)
	}
	if d.Origin == "" {
		d.Origin = d.Namespace
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.add(d)
}

// add records d (normalized and checked), with r.mu held.
func (r *Registry) add(d task.Definition) error {
	ns := r.defs[d.Namespace]
	if ns == nil {
		ns = map[string]task.Definition{}
		r.defs[d.Namespace] = ns
	}
	if _, dup := ns[d.Name]; dup {
		return taskconv.Duplicate(d.Namespace, d.Name)
	}
	ns[d.Name] = d
	return nil
}

// rlock read-locks r, first taking in what task.Register recorded since
// the last look when r is Default. Registrations are only ever added, so
// a changed count means new ones; an unchanged count costs no lock.
func (r *Registry) rlock() {
	if r.followsTask {
		if regs := task.Registered(); len(regs) != int(r.seen.Load()) {
			r.mu.Lock()
			if len(regs) > int(r.seen.Load()) { // another reader may have taken in more already
				clear(r.defs)
				for _, d := range regs {
					_ = r.add(d) // task.Register already refused duplicates
				}
				r.seen.Store(int64(len(regs)))
			}
			r.mu.Unlock()
		}
	}
	r.mu.RLock()
}

// Namespaces lists the registered namespaces, sorted.
func (r *Registry) Namespaces() []string {
	r.rlock()
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

func (s namespaceSource) Lookup(name string) (task.Definition, bool) {
	s.r.rlock()
	defer s.r.mu.RUnlock()
	d, ok := s.r.defs[s.ns][name]
	return d, ok
}

func (s namespaceSource) List() []task.Definition {
	s.r.rlock()
	defer s.r.mu.RUnlock()
	out := make([]task.Definition, 0, len(s.r.defs[s.ns]))
	for _, d := range s.r.defs[s.ns] {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b task.Definition) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NamespacesOf lists, sorted, the namespaces of r that have a task called
// name (to tell a user which -p they may have forgotten).
func (r *Registry) NamespacesOf(name string) []string {
	r.rlock()
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
func (ss Sources) Lookup(name string) (task.Definition, bool) {
	for _, s := range ss {
		if d, ok := s.Lookup(name); ok {
			return d, true
		}
	}
	return task.Definition{}, false
}

// List returns every available task, the first source winning for a name.
func (ss Sources) List() []task.Definition {
	seen := map[string]bool{}
	var out []task.Definition
	for _, s := range ss {
		for _, d := range s.List() {
			if !seen[d.Name] {
				seen[d.Name] = true
				out = append(out, d)
			}
		}
	}
	slices.SortFunc(out, func(a, b task.Definition) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Build constructs a task from d, turning a panic in the constructor into
// an error.
func Build(d task.Definition) (t task.Task, err error) {
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

// IntervalOverride reads config intervals.<name> (seconds, a positive
// number or numeric string) as a duration. Context.NamedRecur applies it
// to a task's recurring jobs; hosts apply it to their own periodic work
// for the task (save_state, the monitor's sample and evaluate).
func IntervalOverride(config map[string]any, name string) (time.Duration, bool) {
	return taskconv.IntervalOverride(config, name)
}

// CopyConfig returns a deep copy of a config map: a task is handed a copy
// of its config, so that what it changes is not what the host compares
// the next config with.
func CopyConfig(c map[string]any) map[string]any {
	if c == nil {
		return nil
	}
	return message.Message(c).Copy()
}
