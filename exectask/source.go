package exectask

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// Options configure a Dir.
type Options struct {
	// Logger receives the source's own reports and the co-processes'
	// stderr; nil means slog.Default().
	Logger *slog.Logger
	// Process names the hosting process for the co-processes
	// (MULTIMODULE_PROCESS): "main" or the external's task.
	Process string
	// HandshakeTimeout, MessageTimeout and StopGrace are given to every
	// task's Spec (zero: the defaults).
	HandshakeTimeout, MessageTimeout, StopGrace time.Duration
}

// Dir is a registry.Source: every executable regular file DIR/<TaskName> is
// task TaskName. The directory is watched: a new executable is available
// at once, and an edited one is used from its next start.
//
// Whether a task is stateful is known only from its handshake, but the
// host must know it before it builds the task (to place it). So Dir runs
// an executable once in describe mode (MULTIMODULE_MODE=describe) to read
// its hello, and caches the answer per file version (inode, size, mtime).
// Every real start checks the hello again and corrects the cache.
type Dir struct {
	path string
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	entries  map[string]*entry
	onChange func(name string)

	watcher *fsnotify.Watcher
	done    chan struct{}
	wg      sync.WaitGroup
}

// entry caches what one file version declared.
type entry struct {
	key   fileKey
	ready chan struct{} // closed when hello/err are set
	hello Record
	err   error
}

// fileKey identifies one version of a file.
type fileKey struct {
	ino, size int64
	mtime     int64
	mode      fs.FileMode
}

var _ registry.Source = (*Dir)(nil)

// Open returns the source for directory path (made absolute) and starts
// watching it. Close stops the watching.
func Open(path string, opts Options) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("exec task directory %q: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("exec task directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("exec task directory %s: not a directory", abs)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Process == "" {
		opts.Process = "main"
	}
	d := &Dir{
		path:    abs,
		opts:    opts,
		log:     opts.Logger.With("task_dir", abs),
		entries: map[string]*entry{},
		done:    make(chan struct{}),
	}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		err = w.Add(abs)
		if err != nil {
			w.Close()
		}
	}
	if err != nil {
		// Lookups stat the file every time, so the source stays correct;
		// only the early describe and OnChange are lost.
		d.log.Warn("exec task directory cannot be watched; new executables are found when first looked up", "error", err)
	} else {
		d.watcher = w
		d.wg.Add(1)
		go d.watch()
	}
	return d, nil
}

// Path is the directory, absolute.
func (d *Dir) Path() string { return d.path }

// OnChange sets a function called (on the watching goroutine) with the
// name of an executable that appeared, changed or went away, after its
// new version was described. The daemon uses it to load a configured task
// whose executable just arrived.
func (d *Dir) OnChange(f func(name string)) {
	d.mu.Lock()
	d.onChange = f
	d.mu.Unlock()
}

// Close stops watching the directory.
func (d *Dir) Close() error {
	select {
	case <-d.done:
		return nil
	default:
	}
	close(d.done)
	var err error
	if d.watcher != nil {
		err = d.watcher.Close()
	}
	d.wg.Wait()
	return err
}

// stat returns the key of DIR/name if it is an executable regular file
// with a valid task name.
func (d *Dir) stat(name string) (fileKey, bool) {
	if registry.ValidateName(name) != nil {
		return fileKey{}, false
	}
	fi, err := os.Stat(filepath.Join(d.path, name))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fileKey{}, false
	}
	k := fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = int64(st.Ino)
	}
	return k, true
}

// Lookup returns task name if DIR/name is an executable. The first lookup
// of a new file version runs it in describe mode (bounded by the
// handshake timeout); later ones are answered from the cache. A file that
// fails to describe is still a task: building it fails with the reason,
// which the host reports and retries.
func (d *Dir) Lookup(name string) (task.Definition, bool) {
	key, ok := d.stat(name)
	if !ok {
		return task.Definition{}, false
	}
	e := d.describe(name, key)
	<-e.ready
	return d.definition(name, e), true
}

// List returns every executable in the directory, describing new ones.
func (d *Dir) List() []task.Definition {
	des, err := os.ReadDir(d.path)
	if err != nil {
		d.log.Warn("exec task directory unreadable", "error", err)
		return nil
	}
	var out []task.Definition
	for _, de := range des {
		if def, ok := d.Lookup(de.Name()); ok {
			out = append(out, def)
		}
	}
	slices.SortFunc(out, func(a, b task.Definition) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (d *Dir) definition(name string, e *entry) task.Definition {
	path := filepath.Join(d.path, name)
	return task.Definition{
		Namespace: d.path,
		Name:      name,
		Stateful:  e.hello.Stateful,
		Origin:    path,
		New:       func() (task.Task, error) { return d.build(name, e.hello.Stateful) },
	}
}

// build starts the task for the host. If the co-process declares a
// different statefulness than its definition said (the file changed), the
// cache is corrected and the build fails, so the host retries with the
// right definition.
func (d *Dir) build(name string, stateful bool) (task.Task, error) {
	path := filepath.Join(d.path, name)
	key, _ := d.stat(name)
	t, err := Start(Spec{
		Name: name, Path: path, Process: d.opts.Process,
		Logger:           d.opts.Logger.With("task", name),
		HandshakeTimeout: d.opts.HandshakeTimeout,
		MessageTimeout:   d.opts.MessageTimeout,
		StopGrace:        d.opts.StopGrace,
	})
	if err != nil {
		return nil, err
	}
	d.remember(name, key, t.hello)
	t.onHello = func(h Record) {
		if k, ok := d.stat(name); ok {
			d.remember(name, k, h)
		}
	}
	if t.hello.Stateful != stateful {
		t.cleanup.Stop()
		t.proc.kill()
		return nil, fmt.Errorf("exec task %s: its co-process now declares stateful=%v (it was described as stateful=%v); the definition is updated and the next attempt uses it", name, t.hello.Stateful, stateful)
	}
	return t, nil
}

// remember records a hello seen from a real start of version key.
func (d *Dir) remember(name string, key fileKey, h Record) {
	e := &entry{key: key, ready: make(chan struct{}), hello: h}
	close(e.ready)
	d.mu.Lock()
	d.entries[name] = e
	d.mu.Unlock()
}

// describe returns the cache entry of version key of name, starting a
// describe run when there is none (one at a time per file version).
func (d *Dir) describe(name string, key fileKey) *entry {
	d.mu.Lock()
	if e := d.entries[name]; e != nil && e.key == key {
		d.mu.Unlock()
		return e
	}
	e := &entry{key: key, ready: make(chan struct{})}
	d.entries[name] = e
	d.mu.Unlock()
	e.hello, e.err = Describe(Spec{
		Name: name, Path: filepath.Join(d.path, name), Process: d.opts.Process,
		Logger:           d.opts.Logger.With("task", name),
		HandshakeTimeout: d.opts.HandshakeTimeout,
	})
	if e.err != nil {
		d.log.Warn(fmt.Sprintf("exec task %s: describe failed (the task is offered anyway; loading it will report why): %v", name, e.err))
	}
	close(e.ready)
	return e
}

// Describe runs the executable of spec in describe mode and returns its
// hello. The co-process is told to stop (stdin closed) right after.
func Describe(spec Spec) (Record, error) {
	spec.defaults()
	p, err := startProc(procSpec{
		name: spec.Name, path: spec.Path, dir: dirOf(spec.Path),
		process: spec.Process, mode: ModeDescribe, log: spec.Logger,
	})
	if err != nil {
		return Record{}, fmt.Errorf("describe %s: %w", spec.Path, err)
	}
	defer p.stop(200 * time.Millisecond)
	hello, _, err := p.handshake(spec.HandshakeTimeout, spec.Name, spec.Process, DefaultWindow, true)
	if err != nil {
		return Record{}, fmt.Errorf("describe %s (pid %d): %w", spec.Path, p.pid, err)
	}
	return hello, nil
}

func dirOf(path string) string { return filepath.Dir(path) }

// watch follows the directory: each changed name is described in the
// background (after a short quiet period, so a file being written is not
// run half-done) and reported to OnChange.
func (d *Dir) watch() {
	defer d.wg.Done()
	const settle = 100 * time.Millisecond
	pending := map[string]time.Time{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-d.done:
			return
		case ev, ok := <-d.watcher.Events:
			if !ok {
				return
			}
			if filepath.Dir(ev.Name) != d.path {
				continue
			}
			name := filepath.Base(ev.Name)
			if registry.ValidateName(name) != nil {
				continue
			}
			pending[name] = time.Now().Add(settle)
			timer.Reset(settle)
		case err, ok := <-d.watcher.Errors:
			if !ok {
				return
			}
			d.log.Warn("watching the exec task directory", "error", err)
		case <-timer.C:
			now := time.Now()
			next := time.Duration(0)
			for name, at := range pending {
				if wait := at.Sub(now); wait > 0 {
					if next == 0 || wait < next {
						next = wait
					}
					continue
				}
				delete(pending, name)
				d.changed(name)
			}
			if next > 0 {
				timer.Reset(next)
			}
		}
	}
}

// changed describes the new version of name (if it is still an
// executable) and tells OnChange.
func (d *Dir) changed(name string) {
	if key, ok := d.stat(name); ok {
		d.describe(name, key)
	} else {
		d.mu.Lock()
		delete(d.entries, name)
		d.mu.Unlock()
	}
	d.mu.Lock()
	f := d.onChange
	d.mu.Unlock()
	if f != nil {
		f(name)
	}
}
