// Package daemon wires the MultiModule daemon together: the state
// directory, the transport, the task host, the config file and control
// queue, and orderly exit. The command line (internal/cli) only parses
// flags into Options and calls Run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/configfile"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	_ "github.com/multimodule/multimodule/tasks" // the builtin namespace is always there
	"github.com/multimodule/multimodule/transit"
)

// DefaultControlQueue is the control queue when -q is not given.
const DefaultControlQueue = "MultiModule_control"

// Options are the daemon's settings (the original's flags).
type Options struct {
	StateDir     string             // -s
	ControlQueue string             // -q
	Sources      []string           // -p: namespaces and directories of exec tasks
	ConfigFile   string             // -c
	DebugLevel   int                // -d
	Task         string             // -m: run as the external process of this task
	OOB          string             // -o
	Transit      transit.Options    // how to reach the bus
	Registry     *registry.Registry // nil: the default registry
	// ExternalArgv is the command line that starts this program with the
	// daemon's own options (without -c and -m); an external task runs as
	// ExternalArgv + "-m" <task>.
	ExternalArgv []string
	Stdout       io.Writer
	Stderr       io.Writer
	// ShutdownTimeout bounds the orderly exit (default 60 s).
	ShutdownTimeout time.Duration
	// HTTP is the address of the HTTP listener (--http; "" for none) and
	// HTTPToken the file holding its token (--http-token); see
	// httplistener.go.
	HTTP      string
	HTTPToken string
}

// exitRequest is how a run ends: why, and whether externals are stopped
// too.
type exitRequest struct {
	exitExternals bool
	reason        string
}

// Daemon is one running daemon (or external process). What differs
// between the two is its role (role.go); the rest is the same.
type Daemon struct {
	opts   Options
	role   role
	log    *slog.Logger
	store  *store.Store
	tr     *transit.Transit
	host   *host.Host
	oob    *oob.Dispatcher
	exitCh chan exitRequest
	// exit is the request the run ends with, set by the lifecycle actor
	// before it returns (read by the actors it stops).
	exit exitRequest
	// readied is closed once this process is ready (the lifecycle actor).
	readied chan struct{}
	// shutdown bounds the orderly exit (shutdownContext).
	shutdownOnce   sync.Once
	shutdownCtx    context.Context
	shutdownCancel context.CancelFunc
	// statusMu guards the last status written (writeMainStatus).
	statusMu    sync.Mutex
	statusKey   string
	statusSaved time.Time
	// execDirs are the -p directories of exec tasks, watched until exit.
	execDirs []*exectask.Dir
	// srcs are the task sources, in search order (for notFound).
	srcs registry.Sources
	// topts are the options the daemon's Transit was opened with (the
	// cluster scope's Transit of placed tasks is opened alike).
	topts transit.Options
}

// Run runs the daemon until ctx is cancelled or a cleanly_exit control
// message arrives, then exits in order. The cause of ctx's cancellation
// decides how: a cause with a SignalValue() method returning SIGINT also stops the
// externals.
//
// With opts.Task set, it runs as the external process of that task
// instead (externalRole), until ctx is cancelled.
func Run(ctx context.Context, opts Options) (retErr error) {
	if opts.ControlQueue == "" {
		opts.ControlQueue = DefaultControlQueue
	}
	if opts.StateDir == "" {
		opts.StateDir = "./state"
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Registry == nil {
		opts.Registry = registry.Default()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 60 * time.Second
	}
	if opts.Task == "main" {
		return errors.New("-m main is refused: main is the daemon itself")
	}
	if opts.Transit.Host == host.ClusterScope {
		return fmt.Errorf("--host %s is refused: %s is the host scope of the queues of placed tasks, not a box; give the box its own name", host.ClusterScope, host.ClusterScope)
	}
	if err := transit.ValidateQueueName(opts.ControlQueue); err != nil {
		return fmt.Errorf("-q: %w", err)
	}
	d := &Daemon{
		opts:    opts,
		exitCh:  make(chan exitRequest, 1),
		readied: make(chan struct{}),
	}
	if opts.Task == "" {
		d.role = &mainRole{d: d}
	} else {
		d.role = &externalRole{d: d, task: opts.Task}
	}
	defer func() {
		if d.shutdownCancel != nil {
			d.shutdownCancel()
		}
	}()
	disp, err := d.newDispatcher()
	if err != nil {
		return err
	}
	defer disp.Close()
	d.oob = disp
	d.log = slog.New(oob.NewSlogHandler(disp)).With("process", d.role.process())
	defer d.role.begin()()

	// What the command line names is checked before anything is created
	// or started: the task sources (-p) and the config file (-c), which
	// this program refuses to start without. (A config file that breaks
	// while the daemon runs is only reported: the daemon keeps its
	// config.)
	sources, err := d.sources()
	defer func() {
		for _, dir := range d.execDirs {
			_ = dir.Close()
		}
	}()
	if err != nil {
		return err
	}
	d.srcs = sources
	if opts.ConfigFile != "" {
		if _, err := configfile.Load(opts.ConfigFile); err != nil {
			return fmt.Errorf("not started: the config file (-c) must load: %w", err)
		}
	}

	st, err := store.Open(opts.StateDir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	d.store = st
	// Its status file names this process by its identity (pid and start
	// time): without one it cannot start.
	if _, err := procid.Self(); err != nil {
		return fmt.Errorf("identify this process: %w", err)
	}
	release, err := d.role.open()
	if err != nil {
		return err
	}
	defer release()

	topts := opts.Transit
	topts.StateDir = opts.StateDir
	if topts.Logger == nil {
		topts.Logger = d.log
	}
	hopts := host.Options{
		Process: d.role.process(),
		Store:   st,
		Sources: sources,
		Logger:  d.log,
		// Reserved names and is_external for a task no source has are
		// refused (the daemon's CheckConfig); an unknown task's error
		// names the sources searched and the -p that has it.
		Placement: d.role.placement,
		NotFound:  d.notFound,
		Out:       d.out,
		OnConfigChanged: func(name string, _ map[string]any) {
			d.role.configChanged(name)
		},
	}
	d.role.options(&topts, &hopts)
	d.topts = topts
	tr, err := transit.Open(ctx, topts)
	if err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	d.tr = tr
	defer tr.Close()
	ready := false
	defer func() {
		if retErr != nil && !ready {
			stopStartedBus(tr, topts, d.log)
		}
	}()

	hopts.Transit = tr
	h, err := host.New(hopts)
	if err != nil {
		return err
	}
	d.host = h
	d.watchTaskDirs()
	if err := d.role.start(); err != nil {
		return err
	}
	if opts.ConfigFile != "" {
		if err := d.loadConfigFile(context.Background()); err != nil {
			d.log.Error("config file", "error", err)
		}
	}
	ready = true
	tuneGC(d.role.heapFloor())

	// The actors, in the order they stop in (group): first what brings
	// requests in, last the host's orderly exit. Every goroutine started
	// here ends before Run returns: nothing acts on the host after its
	// shutdown.
	var g group
	d.addLifecycle(ctx, &g)
	d.role.addIntake(&g)
	g.addUntilStopped(func(ctx context.Context) { _ = h.Run(ctx) })
	if opts.ConfigFile != "" {
		g.addUntilStopped(d.watchConfigFile)
	}
	if len(d.execDirs) > 0 {
		g.addUntilStopped(func(ctx context.Context) {
			<-ctx.Done()
			for _, dir := range d.execDirs {
				_ = dir.Close() // waits for its change callbacks (watchTaskDirs)
			}
		})
	}
	d.role.addUpkeep(&g)
	d.addHostShutdown(&g)
	return g.run()
}

// addLifecycle adds the actor that announces this process ready and
// waits for the request to exit: ctx done (a signal) or a cleanly_exit
// control message. It returns first, and so begins the orderly exit.
func (d *Daemon) addLifecycle(ctx context.Context, g *group) {
	stop := make(chan struct{})
	g.add(func() error {
		if err := d.writeMainStatus(); err != nil {
			d.log.Error("write status", "error", err)
		}
		d.role.ready()
		d.log.Info("multimodule ready", "state", d.opts.StateDir, "control_queue", d.opts.ControlQueue, "process", d.role.process())
		close(d.readied)
		var req exitRequest
		select {
		case <-ctx.Done():
			req = exitRequest{reason: "context done"}
			var sig interface{ SignalValue() os.Signal }
			if errors.As(context.Cause(ctx), &sig) {
				req.reason = "signal " + sig.SignalValue().String()
				req.exitExternals = sig.SignalValue() == os.Interrupt
			}
		case req = <-d.exitCh:
		case <-stop:
			req = exitRequest{reason: "an actor of the daemon ended"}
		}
		d.exit = req
		d.log.Info("exiting", "reason", req.reason, "exit_externals", req.exitExternals)
		return nil
	}, func(error) { close(stop) })
}

// addHostShutdown adds the actor that, stopped last, shuts the host down
// in order (its tasks' state saved, its queues flushed), within
// Options.ShutdownTimeout.
func (d *Daemon) addHostShutdown(g *group) {
	stop := make(chan struct{})
	g.add(func() error {
		<-stop
		if err := d.host.Shutdown(d.shutdownContext()); err != nil {
			return fmt.Errorf("orderly exit: %w", err)
		}
		return nil
	}, func(error) { close(stop) })
}

// shutdownContext bounds the orderly exit: Options.ShutdownTimeout from
// the first call (once the actors that bring requests in have stopped).
func (d *Daemon) shutdownContext() context.Context {
	d.shutdownOnce.Do(func() {
		d.shutdownCtx, d.shutdownCancel = context.WithTimeout(context.Background(), d.opts.ShutdownTimeout)
	})
	return d.shutdownCtx
}

// stopStartedBus stops the embedded bus this process started, when it
// fails to start: a bus nobody uses must not stay behind. A bus that
// another client uses meanwhile is left running.
func stopStartedBus(tr *transit.Transit, topts transit.Options, log *slog.Logger) {
	if tr.StartedBus() == 0 {
		return
	}
	_ = tr.Close()
	dir := topts.TransportDir
	if dir == "" {
		dir = filepath.Join(topts.StateDir, "transit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := transit.StopBus(ctx, dir, false); err != nil {
		log.Warn("the daemon did not start; the bus it started was not stopped", "dir", dir, "error", err)
	}
}

// ExitTaskLoad is the exit status of an external process whose task
// cannot be loaded.
const ExitTaskLoad = 3

// TaskLoadError ends an external process whose task cannot be loaded.
type TaskLoadError struct {
	Task string
	Err  error
}

func (e *TaskLoadError) Error() string {
	return fmt.Sprintf("task %s failed to load: %v", e.Task, e.Err)
}
func (e *TaskLoadError) Unwrap() error { return e.Err }

// ExitCode is the process exit status for this error.
func (e *TaskLoadError) ExitCode() int { return ExitTaskLoad }

// sources resolves -p into task sources, "builtin" first.
func (d *Daemon) sources() (registry.Sources, error) {
	ss := registry.Sources{d.builtinSource(), d.opts.Registry.Namespace(task.Builtin)}
	for _, entry := range d.opts.Sources {
		for _, p := range strings.Split(entry, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			ns := registry.NormalizeNamespace(p)
			if !strings.Contains(p, "/") && contains(d.opts.Registry.Namespaces(), ns) {
				// A compiled-in namespace is never shadowed by a directory
				// of the same name in the working directory: whoever can
				// write there would choose the code that runs.
				if fi, err := os.Stat(p); err == nil && fi.IsDir() {
					d.log.Warn(fmt.Sprintf("-p %s: using the compiled-in task namespace %s; the directory ./%s is not used (write -p ./%s to use it)", p, ns, p, p))
				}
				ss = append(ss, d.opts.Registry.Namespace(ns))
				continue
			}
			if isTaskDir(p) {
				dir, err := exectask.Open(p, exectask.Options{Logger: d.log, Process: d.role.process()})
				if err != nil {
					return nil, fmt.Errorf("-p %s: %w", p, err)
				}
				d.execDirs = append(d.execDirs, dir)
				ss = append(ss, dir)
				continue
			}
			return nil, fmt.Errorf("-p %s: no such task namespace (known: %s) and no such directory", p, strings.Join(d.opts.Registry.Namespaces(), ", "))
		}
	}
	return ss, nil
}

// isTaskDir: a -p entry that is not a compiled-in namespace is a
// directory of exec tasks when it contains "/" or names an existing
// directory.
func isTaskDir(p string) bool {
	if strings.Contains(p, "/") {
		return true
	}
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// watchTaskDirs makes a new or changed executable in a -p directory
// reach a task configured before it existed (usable without a
// restart).
func (d *Daemon) watchTaskDirs() {
	for _, dir := range d.execDirs {
		dir.OnChange(func(name string) {
			if _, configured := d.host.Config(name); !configured {
				return
			}
			if err := d.host.Reconcile(name); err != nil {
				d.log.Error("exec task changed", "task", name, "error", err)
			}
			d.role.configChanged(name)
		})
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// writeMainStatus records this process in <state>/main.status (or the
// task's status for an external), which tests and `status` read.
func (d *Daemon) writeMainStatus() error {
	_, err := d.writeStatus()
	return err
}

// writeStatus is writeMainStatus that also says whether what the
// daemon's monitor reads in the file (the task's counters, its
// co-process) changed. It writes only then, or when the last write is
// statusRefresh old (the usage figures): an external looks often (its
// keepStatus), and each write creates a file and deletes the one it
// replaces; on ext4 without a journal every recent deletion in the
// directory makes the next file creations there slower (fifty idle
// externals rewrote 25 files a second).
func (d *Daemon) writeStatus() (changed bool, err error) {
	d.statusMu.Lock()
	defer d.statusMu.Unlock()
	var st store.Status
	d.role.status(&st)
	// Decided before reading /proc: an idle external's look costs
	// nothing but this.
	key := fmt.Sprint(os.Getpid(), st.Stateful, st.CoPID, st.Counters) // maps print sorted
	now := time.Now()
	changed = key != d.statusKey
	if !changed && now.Sub(d.statusSaved) < statusRefresh {
		return false, nil
	}
	self, err := procid.Self()
	if err != nil {
		return changed, err
	}
	u, _ := procid.UsageOf(self.PID)
	st.PID, st.StartTime, st.Cmdline = self.PID, self.StartTime, self.Cmdline
	st.FDs, st.Threads, st.RSSBytes, st.CPUSeconds = u.FDs, u.Threads, u.RSSBytes, u.CPUSeconds
	st.NATS = RedactNATSURL(d.opts.Transit.NATSURL)
	if err := d.store.SaveStatus(d.role.process(), st); err != nil {
		return changed, err
	}
	d.statusKey, d.statusSaved = key, now
	return changed, nil
}

// RedactNATSURL returns the comma-separated NATS URLs without their
// user information (user, password or token).
func RedactNATSURL(urls string) string {
	if urls == "" {
		return ""
	}
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			u.User = nil
			p = u.String()
		} else if at := strings.LastIndex(p, "@"); err != nil && at >= 0 {
			p = p[at+1:]
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// statusRefresh is how old an external's status may grow while nothing
// the monitor reads in it changes (writeMainStatus). Every external
// watches the state directory for config changes, so each status write
// wakes every external: with N externals refreshing every statusRefresh,
// each of them wakes about 4N/statusRefresh times a second (30 s made it
// 7 a second with 50 externals, 27 with 200). The usage figures in the
// file are only a record: the status view and the monitor read a live
// process's usage in /proc.
const statusRefresh = 10 * time.Minute
