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
	"sync"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/supervise"
)

// StopGrace is how long an external gets between SIGTERM and SIGKILL.
const StopGrace = 10 * time.Second

// externals is the task-management half of the MultiModule task: it
// starts, adopts, restarts and stops external task processes so that
// what runs matches what the config wants. It reacts to events — a
// config change, a process exit (wait for our children, pidfd for adopted
// ones), a back-off timer, a failsafe file created or removed by hand —
// and runs a slow safety pass over every task as well.
type externals struct {
	d    *Daemon
	kick chan struct{} // something was added to pending

	mu       sync.Mutex
	pending  map[string]bool               // tasks to reconcile soon (request)
	failsafe map[string]bool               // failsafed tasks, as of the last check
	checks   int                           // failsafe checks since the last full pass
	procs    map[string]*supervise.Process // running externals, started or adopted
	stopping map[string]bool               // asked to exit (moving back inside)
	backoff  map[string]*supervise.Backoff
	notUntil map[string]time.Time    // crash back-off: no start before
	lastExit map[string]store.Reason // why the last process of a task ended (for status)
	exited   chan string
	// quit is closed when the daemon exits: the goroutines below (wg) end
	// then, and Run waits for them.
	quit chan struct{}
	wg   sync.WaitGroup // watch and stop goroutines

	// Poison messages (poison.go): how the next start of a task after a
	// crash is counted, and the restarts not counted yet.
	nextStart map[string]startNext
	held      map[string]*heldStarts
}

func newExternals(d *Daemon) *externals {
	x := &externals{
		d:         d,
		kick:      make(chan struct{}, 1),
		pending:   map[string]bool{},
		procs:     map[string]*supervise.Process{},
		stopping:  map[string]bool{},
		backoff:   map[string]*supervise.Backoff{},
		notUntil:  map[string]time.Time{},
		lastExit:  map[string]store.Reason{},
		exited:    make(chan string, 64),
		quit:      make(chan struct{}),
		nextStart: map[string]startNext{},
		held:      map[string]*heldStarts{},
	}
	return x
}

// close ends the goroutines of x (watching externals, stopping them) and
// waits for them. It is called once run has returned (and after stopAll):
// the externals still running keep running, and the next daemon adopts
// them.
func (x *externals) close() {
	close(x.quit)
	x.wg.Wait()
}

// quitting reports whether the daemon is exiting (close was called).
func (x *externals) quitting() bool {
	select {
	case <-x.quit:
		return true
	default:
		return false
	}
}

// goWatch watches the process p of name until it exits (or the daemon
// does).
func (x *externals) goWatch(name string, p *supervise.Process) {
	x.wg.Go(func() { x.watch(name, p) })
}

// alive reports whether an external process of name runs (so the daemon
// must not host the task itself). It takes only the externals' own lock,
// so the host may call it under its lock.
func (x *externals) alive(name string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.procs[name]
	if p == nil {
		return false
	}
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// request asks for name to be reconciled soon. It never blocks and
// never drops a request (a thousand tasks configured at once each ask).
func (x *externals) request(name string) {
	x.mu.Lock()
	x.pending[name] = true
	x.mu.Unlock()
	select {
	case x.kick <- struct{}{}:
	default: // already signalled
	}
}

// takePending returns, sorted, the tasks requested since the last call.
func (x *externals) takePending() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	names := slices.Sorted(maps.Keys(x.pending))
	clear(x.pending)
	return names
}

// adoptAll takes over the externals of a previous daemon life that are
// still running: no duplicates, no restarts.
func (x *externals) adoptAll() {
	names, err := x.d.store.Tasks()
	if err != nil {
		x.d.log.Error("externals: list tasks", "error", err)
		return
	}
	for _, name := range names {
		x.adopt(name)
	}
}

// adopt takes over a running external process of name that its status
// file names, if there is one.
func (x *externals) adopt(name string) bool {
	st, err := x.d.store.LoadStatus(name)
	if err != nil || st == nil || !st.External {
		return false
	}
	id := st.Identity()
	if !id.Alive() {
		return false
	}
	lock, err := x.d.store.ExternalLockPath(name)
	if err != nil {
		return false
	}
	// Only our own external of this state dir: running as us, started as
	// `-m <task>`, holding the task's lock here. A status naming anything
	// else is not believed (that process is never signalled).
	p, err := supervise.Adopt(id, supervise.Expect{ArgvSuffix: []string{"-m", name}, LockPath: lock})
	if errors.Is(err, supervise.ErrNotOurs) {
		x.d.host.Out(oob.ChannelError, name, fmt.Sprintf("the status of %s names a process that is not its external process: not adopted, left alone: %v", name, err), nil)
		return false
	}
	if err != nil {
		x.d.log.Warn("externals: cannot adopt", "task", name, "pid", id.PID, "error", err)
		return false
	}
	x.mu.Lock()
	x.procs[name] = p
	x.mu.Unlock()
	x.goWatch(name, p)
	x.d.host.Out(oob.ChannelLog, name, fmt.Sprintf("adopted the running external process of %s (pid %d)", name, id.PID), nil)
	return true
}

func (x *externals) watch(name string, p *supervise.Process) {
	select {
	case <-p.Done():
	case <-x.quit:
		return
	}
	select {
	case x.exited <- name:
	case <-x.quit:
	}
}

// How often the supervisor looks for failsafes made or cleared by hand
// (each costs a stat of the state directory, and a listing when it
// changed), and every how many of those it reconciles every task.
const (
	failsafeCheckEvery = 2 * time.Second
	fullPassEvery      = 15 // × failsafeCheckEvery: 30 s
)

// run is the reconciliation loop; it returns when ctx is done.
func (x *externals) run(ctx context.Context) {
	safety := time.NewTicker(failsafeCheckEvery)
	defer safety.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	x.reconcileAll()
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
			for _, name := range x.takePending() {
				x.reconcile(name)
			}
		case name := <-x.exited:
			x.onExit(name)
		case <-safety.C:
			x.safetyPass()
		case <-timer.C:
			now := time.Now()
			x.reconcileAll()
			x.forgetBackoffs(now)
		}
		if d, ok := x.nextDue(); ok {
			timer.Reset(d)
		}
	}
}

// forgetBackoffs drops the crash back-offs that ended by now, once the
// pass that acted on them is done: one left behind would be due at once
// for ever, and the loop would reconcile every task every millisecond.
func (x *externals) forgetBackoffs(now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, t := range x.notUntil {
		if !t.After(now) {
			delete(x.notUntil, name)
			delete(x.lastExit, name)
		}
	}
}

func (x *externals) nextDue() (time.Duration, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var best time.Duration
	found := false
	for _, t := range x.notUntil {
		d := max(time.Until(t), time.Millisecond)
		if !found || d < best {
			best, found = d, true
		}
	}
	return best, found
}

// safetyPass runs every failsafeCheckEvery. An idle task costs it
// nothing: it reconciles the tasks whose failsafe file appeared or went
// away since the last pass (by hand: the daemon's own failsafes are acted
// on at once), and every fullPassEvery passes every task.
func (x *externals) safetyPass() {
	x.mu.Lock()
	x.checks++
	full := x.checks >= fullPassEvery
	if full {
		x.checks = 0
	}
	x.mu.Unlock()
	x.releasePassed()
	if full {
		x.reconcileAll()
		return
	}
	now, err := x.d.store.FailsafedNow()
	if err != nil {
		x.d.log.Error("externals: list failsafed tasks", "error", err)
		x.reconcileAll()
		return
	}
	x.mu.Lock()
	before := x.failsafe
	x.failsafe = now
	x.mu.Unlock()
	var changed []string
	for name := range now {
		if !before[name] {
			changed = append(changed, name)
		}
	}
	for name := range before {
		if !now[name] {
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	for _, name := range changed {
		x.reconcile(name)
	}
}

// reconcileAll reconciles every task configured or running.
func (x *externals) reconcileAll() {
	if fs, err := x.d.store.FailsafedNow(); err == nil {
		x.mu.Lock()
		x.failsafe = fs
		x.mu.Unlock()
	}
	names := map[string]bool{}
	for name := range x.d.host.Configs() {
		names[name] = true
	}
	x.mu.Lock()
	for name := range x.procs {
		names[name] = true
	}
	x.mu.Unlock()
	keys := make([]string, 0, len(names))
	for n := range names {
		keys = append(keys, n)
	}
	slices.Sort(keys)
	for _, name := range keys {
		x.reconcile(name)
	}
}

// wantsExternal: configured with is_external and not failsafed.
func (x *externals) wantsExternal(name string) bool {
	cfg, ok := x.d.host.Config(name)
	if !ok || !host.IsExternal(cfg) {
		return false
	}
	if fs, _ := x.d.store.ReadFailsafe(name); fs != nil {
		return false
	}
	return true
}

// reconcile applies the placement cases (internal, external, moving) to one task.
func (x *externals) reconcile(name string) {
	want := x.wantsExternal(name)
	x.mu.Lock()
	p := x.procs[name]
	stopping := x.stopping[name]
	notUntil, backingOff := x.notUntil[name]
	x.mu.Unlock()
	counters := x.d.host.Counters()
	switch {
	case want && p != nil:
		// Running: config changes reach it through its .conf file.
	case want && backingOff && time.Now().Before(notUntil):
		// Crash back-off: the timer brings us back.
	case want && x.d.host.Hosts(name):
		// Still inside the daemon: the host is unloading it (its state is
		// being saved); the config change's request brings us back.
	case want:
		if !x.adopt(name) {
			x.start(name)
		}
	case p != nil && !stopping:
		// Running external, now wanted inside (or failsafed): ask it to
		// exit; when it has, the host loads it from its saved state.
		x.mu.Lock()
		x.stopping[name] = true
		x.mu.Unlock()
		counters.Add(name, host.MetricStopRequestExternal, 1)
		x.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), StopGrace+10*time.Second)
			defer cancel()
			// The daemon exiting ends the wait (the process may stay:
			// the next daemon adopts it).
			stopped := make(chan struct{})
			defer close(stopped)
			x.wg.Go(func() {
				select {
				case <-x.quit:
					cancel()
				case <-stopped:
				}
			})
			if err := p.Stop(ctx, StopGrace); err != nil && !x.quitting() {
				x.d.host.Out(oob.ChannelError, name, fmt.Sprintf("stopping the external process of %s: %v", name, err), nil)
			}
		})
	case p == nil:
		// Internal (or nothing): let the host load it if it should.
		if _, ok := x.d.host.Config(name); ok {
			if err := x.d.host.Reconcile(name); err != nil {
				x.d.log.Debug("externals: host reconcile", "task", name, "error", err)
			}
		}
	}
}

// start runs the task as its own process: this program with the daemon's
// options plus -m <task>, detached, output to <state>/<task>.log. A
// message its last process was handling when it died unwatched (while no
// daemon ran) is counted first.
func (x *externals) start(name string) {
	x.recordUnwatchedCrash(name)
	x.launch(name)
}

// restartNow starts a new process for name at once after its process,
// watched here, exited unasked (onExit): its crash is recorded already
// and its status file names the dead process, so neither an unwatched
// crash nor a process to adopt is looked for, as reconcile would.
func (x *externals) restartNow(name string) {
	if x.d.host.Hosts(name) {
		x.reconcile(name)
		return
	}
	x.launch(name)
}

// launch starts the task's process (start).
func (x *externals) launch(name string) {
	argv := append(slices.Clone(x.d.opts.ExternalArgv), "-m", name)
	counters := x.d.host.Counters()
	counters.Add(name, host.MetricStartRequestExternal, 1)
	p, err := supervise.Start(supervise.Spec{
		Argv:    argv,
		Env:     externalEnv(os.Environ()),
		LogPath: filepath.Join(x.d.store.Dir(), name+".log"),
	})
	if err != nil {
		counters.Add(name, host.MetricTaskCompileFailureExternal, 1)
		x.d.host.Out(oob.ChannelError, name, fmt.Sprintf("cannot start the external process of %s: %v", name, err), nil)
		x.scheduleRetry(name, 0)
		x.mu.Lock()
		x.lastExit[name] = store.Reason{Reason: ReasonLoadError, Detail: "cannot start its process: " + err.Error(), Until: unixSeconds(x.notUntil[name])}
		x.mu.Unlock()
		return
	}
	x.mu.Lock()
	x.countStartLocked(name)
	x.procs[name] = p
	x.mu.Unlock()
	x.goWatch(name, p)
	x.d.host.Out(oob.ChannelDebug, name, fmt.Sprintf("started the external process of %s (pid %d)", name, p.Identity().PID), nil)
}

// externalEnv is the environment of an external process: ours, with the
// Go runtime's GOMAXPROCS update turned off (GODEBUG updatemaxprocs=0)
// unless GODEBUG says otherwise. The runtime looks at the CPU affinity
// and cgroup limit every second for it, in every process; an idle
// external has nothing else to do most seconds, and one task's process
// needs no more than the CPUs it found at start.
func externalEnv(environ []string) []string {
	out := make([]string, 0, len(environ)+1)
	godebug := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v
			continue
		}
		out = append(out, kv)
	}
	if !strings.Contains(godebug, "updatemaxprocs=") {
		if godebug != "" {
			godebug += ","
		}
		godebug += "updatemaxprocs=0"
	}
	return append(out, "GODEBUG="+godebug)
}

func (x *externals) scheduleRetry(name string, ranFor time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	b := x.backoff[name]
	if b == nil {
		policy := supervise.ExternalRestart
		b = &policy
		x.backoff[name] = b
	}
	x.notUntil[name] = time.Now().Add(b.Next(ranFor))
}

// onExit handles the end of an external process.
func (x *externals) onExit(name string) {
	x.mu.Lock()
	p := x.procs[name]
	stopping := x.stopping[name]
	if p != nil {
		select {
		case <-p.Done():
			delete(x.procs, name)
		default:
			p = nil // an old watcher of a replaced process
		}
	}
	delete(x.stopping, name)
	x.mu.Unlock()
	if p == nil {
		return
	}
	if stopping {
		// It left because it should run inside now (or not at all). A
		// message it was handling when it was killed (a failsafe, a stop
		// past its grace) was not what ended it.
		x.forgetInFlight(name)
		x.mu.Lock()
		x.releaseLocked(name)
		delete(x.nextStart, name)
		x.mu.Unlock()
		x.d.host.Out(oob.ChannelDebug, name, fmt.Sprintf("the external process of %s has exited as asked", name), nil)
		if err := x.d.host.Reconcile(name); err != nil {
			x.d.host.Out(oob.ChannelError, name, fmt.Sprintf("loading %s inside the daemon: %v", name, err), nil)
		}
		// The config may have turned external again while it was
		// exiting: then start the new process now.
		x.reconcile(name)
		return
	}
	code, signaled, known := p.ExitStatus()
	how := "exited"
	switch {
	case known && signaled:
		how = fmt.Sprintf("was killed by signal %d", code)
	case known:
		how = fmt.Sprintf("exited with status %d", code)
	}
	ran := p.RanFor()
	reason := ReasonBackOff
	if known && !signaled && code == ExitTaskLoad {
		x.d.host.Counters().Add(name, host.MetricTaskCompileFailureExternal, 1)
		how = "could not load the task (see its log " + filepath.Join(x.d.store.Dir(), name+".log") + ")"
		reason = ReasonLoadError
	}
	rec := x.recordCrash(name, exitStatus(p), p.Identity().PID)
	x.mu.Lock()
	x.planRestartLocked(name, rec)
	x.mu.Unlock()
	switch {
	case rec != nil && rec.deadLetter:
		how += fmt.Sprintf(" while handling the message at bus sequence %d (member %d), at %d crashes in a row with it in flight: the next process moves it to the dead-letter queue", rec.pos.seq, rec.pos.member+1, rec.crashes)
	case rec != nil:
		how += fmt.Sprintf(" while handling the message at bus sequence %d (member %d), at %d crash(es) in a row with it in flight: it is handed to the task again", rec.pos.seq, rec.pos.member+1, rec.crashes)
	}
	if x.wantsExternal(name) {
		x.scheduleRetry(name, ran)
		x.mu.Lock()
		until := x.notUntil[name]
		x.lastExit[name] = store.Reason{Reason: reason, Detail: "its process " + how, Until: unixSeconds(until)}
		x.mu.Unlock()
		if time.Until(until) <= 0 {
			// No back-off: the replacement first, the report after it.
			x.restartNow(name)
		}
		x.d.host.Out(oob.ChannelError, name, fmt.Sprintf("the external process of %s (pid %d) %s after %v; restarting", name, p.Identity().PID, how, ran.Round(time.Millisecond)), nil)
		return
	}
	x.mu.Lock()
	x.releaseLocked(name)
	delete(x.nextStart, name)
	x.mu.Unlock()
	x.reconcile(name)
}

// stopAll stops every external (cleanly_exit with exit_externals, SIGINT):
// SIGTERM, a grace period, SIGKILL for stragglers.
func (x *externals) stopAll(ctx context.Context) {
	x.mu.Lock()
	procs := make(map[string]*supervise.Process, len(x.procs))
	for k, v := range x.procs {
		procs[k] = v
		x.stopping[k] = true
	}
	x.mu.Unlock()
	var wg sync.WaitGroup
	for name, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.d.host.Counters().Add(name, host.MetricStopRequestExternal, 1)
			if err := p.Stop(ctx, StopGrace); err != nil {
				x.d.log.Error("stopping external", "task", name, "error", err)
			}
		}()
	}
	wg.Wait()
}

// reasons returns why external tasks that should run do not: those
// waiting for a restart after their process ended (a crash, or a load
// failure), until the restart. A task whose process runs has none.
func (x *externals) reasons() store.Reasons {
	now := time.Now()
	x.mu.Lock()
	out := store.Reasons{}
	for name, r := range x.lastExit {
		p := x.procs[name]
		running := false
		if p != nil {
			select {
			case <-p.Done():
			default:
				running = true
			}
		}
		if running || now.After(x.notUntil[name]) {
			continue
		}
		out[name] = r
	}
	x.mu.Unlock()
	for name := range out {
		if !x.wantsExternal(name) {
			delete(out, name)
		}
	}
	return out
}

// running returns the pid of every live external process, by task.
func (x *externals) running() map[string]int {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make(map[string]int, len(x.procs))
	for name, p := range x.procs {
		select {
		case <-p.Done():
		default:
			out[name] = p.Identity().PID
		}
	}
	return out
}

// process returns the live external process of name, or nil.
func (x *externals) process(name string) *supervise.Process {
	x.mu.Lock()
	defer x.mu.Unlock()
	p := x.procs[name]
	if p == nil {
		return nil
	}
	select {
	case <-p.Done():
		return nil
	default:
		return p
	}
}

// markStopping records that the exit of name's process is wanted (not a
// crash to restart).
func (x *externals) markStopping(name string) {
	x.mu.Lock()
	x.stopping[name] = true
	x.mu.Unlock()
}
