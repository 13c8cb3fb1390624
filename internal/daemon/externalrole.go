package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/tasks/oobtask"
	"github.com/multimodule/multimodule/transit"
)

// externalRole is this program run as the external process of one task
// (-m): it hosts that task, owning its queue, and local copies of the
// stateless tasks it sends to; it applies the configs the daemon saves,
// sends its out-of-band records to the daemon, and keeps its status file
// current for the daemon's monitor. It takes no control messages.
type externalRole struct {
	d    *Daemon
	task string
	// inflight records which message is being handled, for the daemon
	// to read when this process dies (poison.go); nil if it could not
	// be opened.
	inflight host.InFlight
}

func (e *externalRole) process() string { return e.task }

// outOfBand: every record goes to the daemon's OutOfBand queue, so that
// they are handled in one place, as the daemon's -o says.
func (e *externalRole) outOfBand(oob.Handling) oob.Handling {
	h := oob.Handling{}
	for _, ch := range []string{"log", "error", "alert", "debug"} {
		h[ch] = oobtask.Name
	}
	return h
}

func (e *externalRole) begin() func() { return func() {} }

// builtins: OutOfBand only, never hosted here (placement).
func (e *externalRole) builtins(reg *registry.Registry) {
	reg.MustRegister(oobTaskDefinition(e.d))
}

func (e *externalRole) open() (func(), error) {
	d := e.d
	release, err := d.store.LockExternal(e.task)
	if err != nil {
		return nil, fmt.Errorf("external process of %s: %w", e.task, err)
	}
	f, err := openExternalInFlight(d.store.Dir(), e.task)
	if f != nil {
		// Mapped for the life of the process: the task's goroutine
		// may mark a message until the very end.
		e.inflight = f
	}
	if err != nil {
		d.log.Error("external: poison-message records", "error", err)
	}
	return func() { _ = release() }, nil
}

func (e *externalRole) options(t *transit.Options, h *host.Options) {
	// An external finds a poison message itself (poison.go).
	t.OwnerCountsCrashes = true
	h.InFlight = e.inflight
	// Externals apply the configs the daemon saved; only the daemon
	// writes them.
	h.ReadOnlyConfig = true
	// An external hosts its task (loaded from its config, retried when
	// that fails) and local copies loaded on send: nothing on the bus is
	// for it to discover (fifty idle externals asked the bus to count
	// every queue fifty times a second).
	h.ScanInterval = -1
}

// placement: its own task (owning its queue) and local copies of
// stateless tasks; records go to the daemon's OutOfBand task.
func (e *externalRole) placement(name string, def task.Definition, cfg map[string]any) host.Placement {
	switch {
	case name == oobtask.Name:
		return host.NotHere
	case name == e.task:
		return host.HostAndConsume
	case !def.Stateful:
		return host.HostLocalOnly
	}
	return host.NotHere
}

func (e *externalRole) configChanged(string) {}

// start: an external process exists for its task: if the task cannot be
// loaded, it exits with ExitTaskLoad so the daemon counts a load failure
// (task_compile_failure.external) and retries later.
func (e *externalRole) start() error {
	h := e.d.host
	e.d.restoreConfigs()
	if err := h.Reconcile(e.task); err != nil || !slices.Contains(h.Loaded(), e.task) {
		if err == nil {
			err = errors.New("not loaded (no config?)")
		}
		return &TaskLoadError{Task: e.task, Err: err}
	}
	return nil
}

func (e *externalRole) heapFloor() int64 { return externalHeapFloor }

func (e *externalRole) addIntake(*group) {}

func (e *externalRole) ready() {}

// status: the task's counters (the daemon's monitor and status add them
// to its own), whether it is stateful, its co-process.
func (e *externalRole) status(st *store.Status) {
	d := e.d
	st.External = true
	if d.host == nil {
		return
	}
	st.Counters = d.host.Counters().Task(e.task)
	if def, ok := d.host.Lookup(e.task); ok {
		st.Stateful = def.Stateful
	}
	for _, ti := range d.host.Tasks() {
		if ti.Name == e.task {
			st.CoPID = ti.CoPID
		}
	}
}

func (e *externalRole) addUpkeep(g *group) { g.addUntilStopped(e.follow) }

// follow is what an external process does besides hosting its task:
// follow the configs the daemon saves (so a config change reaches it
// without a restart) and keep its status file current (fd and thread
// counts for the status view).
func (e *externalRole) follow(ctx context.Context) {
	d := e.d
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Error("external: cannot watch configs", "error", err)
	} else {
		defer w.Close()
		if err := w.Add(d.store.Dir()); err != nil {
			d.log.Error("external: cannot watch configs", "dir", d.store.Dir(), "error", err)
		}
	}
	var events <-chan fsnotify.Event
	if w != nil {
		events = w.Events
	}
	status := time.NewTicker(2 * time.Second)
	defer status.Stop()
	// A config the daemon saved between this process's start-up restore
	// and the watch above would never reach the task: reload all once,
	// now that the watch is in place. After that only the configs whose
	// files changed are read again (the daemon may keep a thousand).
	reload := time.NewTimer(time.Millisecond)
	all := true
	changed := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if name, ok := strings.CutSuffix(filepath.Base(ev.Name), ".conf"); ok && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				changed[name] = true
				reload.Reset(20 * time.Millisecond)
			}
		case <-reload.C:
			var err error
			if all {
				err = d.host.RestoreConfigs()
			} else {
				err = d.host.RestoreConfigsOf(slices.Collect(maps.Keys(changed)))
			}
			all = false
			clear(changed)
			if err != nil {
				d.log.Error("external: reloading configs", "error", err)
			}
		case <-status.C:
			if err := d.writeMainStatus(); err != nil {
				d.log.Error("external: status", "error", err)
			}
		}
	}
}
