package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
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
	// watcher follows the state directory from before the configs are
	// first read (start), so that none the daemon saves meanwhile is
	// missed; nil if it could not be made (no inotify instance left for
	// this user, a file system without inotify): then the config files
	// are polled instead (polled, from the same moment).
	watcher *fsnotify.Watcher
	pollDir string       // the state directory, when polled
	polled  configStamps // what the last look saw
	// keeper keeps the status file current (keepStatus).
	keeper statusKeeper
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
	// Every bus delivery handled tells the status keeper that the
	// counters moved.
	e.keeper.kick = make(chan struct{}, 1)
	h.InFlight = &pokingInFlight{inner: e.inflight, k: &e.keeper}
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
	// The watch first: a config saved after it is seen by follow, one
	// saved before it is read now.
	e.watcher = e.watchConfigs()
	if e.watcher == nil {
		e.pollDir = e.d.store.Dir()
		e.polled, _ = stampConfigs(e.pollDir)
	}
	e.d.restoreConfigs()
	if err := h.Reconcile(e.task); err != nil || !slices.Contains(h.Loaded(), e.task) {
		if err == nil {
			err = errors.New("not loaded (no config?)")
		}
		if e.watcher != nil {
			_ = e.watcher.Close() // follow, which would, does not run
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

func (e *externalRole) addUpkeep(g *group) {
	g.addUntilStopped(e.follow)
	g.addUntilStopped(e.keepStatus)
}

// watchConfigs watches the state directory for the configs the daemon
// saves; nil (logged) when it cannot.
func (e *externalRole) watchConfigs() *fsnotify.Watcher {
	d := e.d
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Warn("external: cannot watch configs; looking at them every "+configPollEvery.String()+" instead", "error", err)
		return nil
	}
	if err := w.Add(d.store.Dir()); err != nil {
		d.log.Warn("external: cannot watch configs; looking at them every "+configPollEvery.String()+" instead", "dir", d.store.Dir(), "error", err)
		_ = w.Close()
		return nil
	}
	return w
}

// follow applies the configs the daemon saves, so that a config change
// reaches the task without a restart: only the configs whose files
// changed are read again (the daemon may keep a thousand). The watch
// began before start read them all, so none is missed in between.
func (e *externalRole) follow(ctx context.Context) {
	d := e.d
	if e.watcher != nil {
		defer e.watcher.Close()
	}
	e.followWith(ctx, e.watcher, d.host.RestoreConfigs, d.host.RestoreConfigsOf)
}

// configPollEvery is how often an external without a watcher looks at
// the config files.
const configPollEvery = 2 * time.Second

// configStamps is what polling last saw of the config files: by task,
// the file's inode (the store saves a config by renaming a new file over
// the old), modification time and size.
type configStamps map[string]configStamp

type configStamp struct {
	ino  uint64
	mod  time.Time
	size int64
}

// stampConfigs reads the stamps of the config files (<Task>.conf) of
// directory dir.
func stampConfigs(dir string) (configStamps, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := configStamps{}
	for _, de := range entries {
		name, ok := strings.CutSuffix(de.Name(), ".conf")
		if !ok || !de.Type().IsRegular() {
			continue
		}
		if fi, err := de.Info(); err == nil {
			st := configStamp{mod: fi.ModTime(), size: fi.Size()}
			if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
				st.ino = sys.Ino
			}
			out[name] = st
		}
	}
	return out, nil
}

// changedConfigs names the tasks whose config file is new or changed
// in now since before, sorted.
func changedConfigs(before, now configStamps) []string {
	var out []string
	for name, st := range now {
		if old, ok := before[name]; !ok || old != st {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// followWith is follow with w (nil: the config files of e.pollDir are
// looked at every configPollEvery instead) and the functions
// that read all configs again, or some. When the kernel's queue of
// events overflowed (events were lost: a start or a burst of files
// written in the state directory while nothing read them), every config
// is read again; a watcher whose error was not read would stop
// delivering events for good.
func (e *externalRole) followWith(ctx context.Context, w *fsnotify.Watcher, all func() error, some func([]string) error) {
	d := e.d
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	var poll <-chan time.Time
	if w != nil {
		events, errs = w.Events, w.Errors
	} else {
		t := time.NewTicker(configPollEvery)
		defer t.Stop()
		poll = t.C
	}
	reload := time.NewTimer(time.Hour)
	reload.Stop()
	changed := map[string]bool{}
	reloadAll := false
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
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				d.log.Warn("external: config change events lost (the kernel's queue overflowed): reading every config again")
				reloadAll = true
				reload.Reset(20 * time.Millisecond)
				continue
			}
			d.log.Error("external: watching configs", "error", err)
		case <-poll:
			now, err := stampConfigs(e.pollDir)
			if err != nil {
				d.log.Error("external: looking at configs", "error", err)
				continue
			}
			for _, name := range changedConfigs(e.polled, now) {
				changed[name] = true
			}
			e.polled = now
			if len(changed) > 0 {
				reload.Reset(0)
			}
		case <-reload.C:
			var err error
			if reloadAll {
				err = all()
			} else {
				err = some(slices.Collect(maps.Keys(changed)))
			}
			reloadAll = false
			clear(changed)
			if err != nil {
				d.log.Error("external: reloading configs", "error", err)
			}
			e.keeper.poke() // a config applied may move the counters (a load)
		}
	}
}

// How often an external looks at what its status file says (keepStatus):
// within statusEvery of a change it was told of (a bus delivery handled,
// a config applied), and statusIdleLook after a look that found nothing
// changed, for the counters that move without a delivery (messages that
// recurring work emits, a co-process restarted). A look that found a
// change is followed by another statusEvery later.
const (
	statusEvery    = 2 * time.Second
	statusIdleLook = 30 * time.Second
)

// statusKeeper is told when the task's counters may have moved (poke);
// keepStatus then looks, at most every statusEvery.
type statusKeeper struct {
	// armed: a look is due within statusEvery; until it happens, pokes
	// cost one atomic load (one per message handled).
	armed atomic.Bool
	kick  chan struct{} // made by options, before any delivery
	looks atomic.Int64  // how many looks have been written so far (tests)
}

// poke says the counters may have moved. It never blocks.
func (k *statusKeeper) poke() {
	if k.armed.Load() || !k.armed.CompareAndSwap(false, true) {
		return
	}
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// keepStatus keeps this process' status file current for the daemon's
// monitor: it looks when told of a change (statusKeeper) or when a look
// is due, and writes only what changed (writeMainStatus). An idle
// external does not wake for it but every statusIdleLook.
func (e *externalRole) keepStatus(ctx context.Context) {
	k := &e.keeper
	timer := time.NewTimer(statusIdleLook)
	defer timer.Stop()
	due := time.Now().Add(statusIdleLook)
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
			if soon := time.Now().Add(statusEvery); soon.Before(due) {
				due = soon
				timer.Reset(statusEvery)
			}
		case <-timer.C:
			k.armed.Store(false) // what moves from now on pokes again
			moved, err := e.d.writeStatus()
			if err != nil {
				e.d.log.Error("external: status", "error", err)
			}
			k.looks.Add(1) // after the write: a test that sees the look sees the file
			next := statusIdleLook
			if moved {
				next = statusEvery
			}
			due = time.Now().Add(next)
			timer.Reset(next)
		}
	}
}

// pokingInFlight is the external's InFlight (poison.go's, when it could
// be opened) that also tells the status keeper of every delivery dealt
// with.
type pokingInFlight struct {
	inner host.InFlight // nil: no poison-message records
	k     *statusKeeper
}

func (p *pokingInFlight) Begin(d *transit.Delivery) host.Verdict {
	if p.inner == nil {
		return host.Verdict{}
	}
	return p.inner.Begin(d)
}

func (p *pokingInFlight) End(handled bool) {
	if p.inner != nil {
		p.inner.End(handled)
	}
	p.k.poke()
}
