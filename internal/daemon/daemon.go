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
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/configfile"
	"github.com/multimodule/multimodule/message"
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

// ExitRequest is how a run ends: the exit code and whether externals are
// stopped too.
type exitRequest struct {
	exitExternals bool
	reason        string
}

// Daemon is one running daemon (or external process).
type Daemon struct {
	opts   Options
	log    *slog.Logger
	store  *store.Store
	tr     *transit.Transit
	host   *host.Host
	oob    *oob.Dispatcher
	ext    *externals   // the daemon's external supervisor (nil in externals)
	mon    *monitorTask // the MultiModule task (nil in externals)
	self   procid.Identity
	exitCh chan exitRequest
	// statusMu guards the last status written (writeMainStatus).
	statusMu    sync.Mutex
	statusKey   string
	statusSaved time.Time
	// execDirs are the -p directories of exec tasks, watched until exit.
	execDirs []*exectask.Dir
	// srcs are the task sources, in search order (for notFound).
	srcs registry.Sources
	// svc is the daemon's side of its service manager (service.go).
	svc *service
	// http is the HTTP listener (--http), nil without one.
	http *httpListener
}

// Run runs the daemon until ctx is cancelled or a cleanly_exit control
// message arrives, then exits in order. The cause of ctx's cancellation
// decides how: a cause with a SignalValue() method returning SIGINT also stops the
// externals.
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
	if err := transit.ValidateQueueName(opts.ControlQueue); err != nil {
		return fmt.Errorf("-q: %w", err)
	}
	process := "main"
	if opts.Task != "" {
		process = opts.Task
	}
	d := &Daemon{
		opts:   opts,
		exitCh: make(chan exitRequest, 1),
	}
	disp, err := d.newDispatcher()
	if err != nil {
		return err
	}
	defer disp.Close()
	d.oob = disp
	d.log = slog.New(oob.NewSlogHandler(disp)).With("process", process)
	d.svc = d.newService()
	defer d.serviceClose()

	// What the command line names is checked before anything is created
	// or started: the task sources (-p) and the config file (-c), which a
	// daemon refuses to start without. (A config file that breaks while
	// the daemon runs is only reported: the daemon keeps its config.)
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
	if opts.ConfigFile != "" && opts.Task == "" {
		if _, err := configfile.Load(opts.ConfigFile); err != nil {
			return fmt.Errorf("not started: the config file (-c) must load: %w", err)
		}
	}

	st, err := store.Open(opts.StateDir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	d.store = st
	if d.self, err = procid.Self(); err != nil {
		return fmt.Errorf("identify this process: %w", err)
	}
	var inflight host.InFlight
	if opts.Task == "" {
		release, err := st.LockDaemon()
		if err != nil {
			return err
		}
		defer release()
		// The supervisor's safety pass and every load ask whether each
		// task is failsafed: from memory (store.KeepFailsafeView), the
		// directory looked at as often as the supervisor checks.
		st.KeepFailsafeView(failsafeCheckEvery)
		d.ext = newExternals(d)
		d.mon = &monitorTask{d: d}
		if err := d.listenHTTP(); err != nil {
			return err
		}
		defer d.closeHTTP()
	} else {
		release, err := st.LockExternal(opts.Task)
		if err != nil {
			return fmt.Errorf("external process of %s: %w", opts.Task, err)
		}
		defer release()
		// Which message is being handled, for the daemon to read when
		// this process dies (poison.go).
		f, err := openExternalInFlight(st.Dir(), opts.Task)
		if f != nil {
			// Mapped for the life of the process: the task's goroutine
			// may mark a message until the very end.
			inflight = f
		}
		if err != nil {
			d.log.Error("external: poison-message records", "error", err)
		}
	}

	topts := opts.Transit
	topts.StateDir = opts.StateDir
	// An external finds a poison message itself (poison.go).
	topts.OwnerCountsCrashes = opts.Task != ""
	if topts.Logger == nil {
		topts.Logger = d.log
	}
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

	h, err := host.New(host.Options{
		InFlight:  inflight,
		Process:   process,
		Transit:   tr,
		Store:     st,
		Sources:   sources,
		Logger:    d.log,
		Placement: d.placement,
		// Reserved names and is_external for a task no source has are
		// refused; an unknown task's error names the sources searched
		// and the -p that has it.
		CheckConfig: d.checkConfig,
		NotFound:    d.notFound,
		Out:         d.out,
		// Externals apply the configs the daemon saved; only the daemon
		// writes them.
		ReadOnlyConfig: opts.Task != "",
		// An external hosts its task (loaded from its config, retried
		// when that fails) and local copies loaded on send: nothing on
		// the bus is for it to discover (fifty idle externals asked the
		// bus to count every queue fifty times a second).
		ScanInterval: scanIntervalFor(opts.Task),
		OnConfigChanged: func(name string, _ map[string]any) {
			if d.ext != nil {
				d.ext.request(name)
			}
		},
	})
	if err != nil {
		return err
	}
	d.host = h
	d.watchTaskDirs()

	// Externals still running from an earlier life are adopted before
	// any config is applied, so the daemon never hosts a task whose
	// external process runs.
	if d.ext != nil {
		d.ext.adoptAll()
	}
	// Configs first, so that no task is loaded (for waiting messages)
	// before its saved config is known.
	if err := h.RestoreConfigs(); err != nil {
		d.log.Error("restoring saved configs", "error", err)
	}
	if opts.Task != "" {
		// An external process exists for its task: if the task cannot be
		// loaded, exit with ExitTaskLoad so the daemon counts a load
		// failure (task_compile_failure.external) and retries later.
		if err := h.Reconcile(opts.Task); err != nil || !slices.Contains(h.Loaded(), opts.Task) {
			if err == nil {
				err = errors.New("not loaded (no config?)")
			}
			return &TaskLoadError{Task: opts.Task, Err: err}
		}
	}
	if opts.Task == "" {
		// The daemon always runs these two: records from externals, and
		// the monitor.
		for _, name := range []string{OutOfBandName, MonitorName} {
			if _, ok := h.Config(name); !ok {
				if err := h.Configure(name, map[string]any{}); err != nil {
					d.log.Error("loading a built-in task", "task", name, "error", err)
				}
			}
		}
	}
	// Every goroutine started here ends before Run returns: nothing acts
	// on the host after its shutdown.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	watchDone := make(chan struct{})
	if opts.ConfigFile != "" {
		if err := d.loadConfigFile(runCtx); err != nil {
			d.log.Error("config file", "error", err)
		}
		go func() { defer close(watchDone); d.watchConfigFile(runCtx) }()
	} else {
		close(watchDone)
	}
	hostDone := make(chan struct{})
	go func() { defer close(hostDone); _ = h.Run(runCtx) }()
	extDone := make(chan struct{})
	if d.ext != nil {
		go func() { defer close(extDone); d.ext.run(runCtx) }()
	} else {
		go func() { defer close(extDone); d.externalLoop(runCtx) }()
	}
	controlDone := make(chan struct{})
	controlCtx, stopControl := context.WithCancel(context.Background())
	if opts.Task == "" {
		go func() { defer close(controlDone); d.control(controlCtx) }()
	} else {
		close(controlDone)
	}
	if err := d.writeMainStatus(); err != nil {
		d.log.Error("write status", "error", err)
	}
	ready = true
	d.serveHTTP()
	d.log.Info("multimodule ready", "state", opts.StateDir, "control_queue", opts.ControlQueue, "process", process)
	d.serviceReady()

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
	}
	d.log.Info("exiting", "reason", req.reason, "exit_externals", req.exitExternals)
	d.serviceStopping(req.reason)
	d.closeHTTP()
	stopControl()
	<-controlDone
	sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	stopRun()
	<-watchDone
	<-extDone
	for _, dir := range d.execDirs {
		_ = dir.Close() // waits for its change callbacks (watchTaskDirs)
	}
	if d.ext != nil {
		if req.exitExternals {
			d.ext.stopAll(sctx)
		}
		d.ext.close()
	}
	err = h.Shutdown(sctx)
	<-hostDone
	if err != nil {
		return fmt.Errorf("orderly exit: %w", err)
	}
	return nil
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
				process := "main"
				if d.opts.Task != "" {
					process = d.opts.Task
				}
				dir, err := exectask.Open(p, exectask.Options{Logger: d.log, Process: process})
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
			if d.ext != nil {
				d.ext.request(name)
			}
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

// placement: the daemon hosts every task not configured external; an
// external process hosts its own task (owning its queue) and local copies
// of stateless tasks.
func (d *Daemon) placement(name string, def task.Definition, cfg map[string]any) host.Placement {
	if name == OutOfBandName && d.opts.Task != "" {
		return host.NotHere // records from externals are handled by the daemon
	}
	if d.opts.Task == "" {
		if host.IsExternal(cfg) || d.ext.alive(name) {
			return host.NotHere
		}
		return host.HostAndConsume
	}
	switch {
	case name == d.opts.Task:
		return host.HostAndConsume
	case !def.Stateful:
		return host.HostLocalOnly
	}
	return host.NotHere
}

// writeMainStatus records this process in <state>/main.status (or the
// task's status for an external), which tests and `status` read. An
// external calls it every 2 s; it writes only when what the daemon's
// monitor reads there changed (the task's counters, its co-process) or
// the last write is statusRefresh old (the usage figures): each write
// creates a file and deletes the one it replaces, and on ext4 without a
// journal every recent deletion in the directory makes the next file
// creations there slower (fifty idle externals rewrote 25 files a second).
func (d *Daemon) writeMainStatus() error {
	d.statusMu.Lock()
	defer d.statusMu.Unlock()
	name := "main"
	if d.opts.Task != "" {
		name = d.opts.Task
	}
	var (
		counters map[string]uint64
		stateful bool
		coPID    int
	)
	if d.opts.Task != "" && d.host != nil {
		counters = d.host.Counters().Task(d.opts.Task)
		if def, ok := d.host.Lookup(d.opts.Task); ok {
			stateful = def.Stateful
		}
		for _, ti := range d.host.Tasks() {
			if ti.Name == d.opts.Task {
				coPID = ti.CoPID
			}
		}
	}
	// Decided before reading /proc: an idle external's check costs
	// nothing but this.
	key := fmt.Sprint(os.Getpid(), stateful, coPID, counters) // maps print sorted
	now := time.Now()
	if key == d.statusKey && now.Sub(d.statusSaved) < statusRefresh {
		return nil
	}
	self, err := procid.Self()
	if err != nil {
		return err
	}
	u, _ := procid.UsageOf(self.PID)
	st := store.Status{
		PID: self.PID, StartTime: self.StartTime, Cmdline: self.Cmdline,
		FDs:        u.FDs,
		Threads:    u.Threads,
		RSSBytes:   u.RSSBytes,
		CPUSeconds: u.CPUSeconds,
		External:   d.opts.Task != "",
		NATS:       RedactNATSURL(d.opts.Transit.NATSURL),
		Counters:   counters,
		Stateful:   stateful,
		CoPID:      coPID,
	}
	if err := d.store.SaveStatus(name, st); err != nil {
		return err
	}
	d.statusKey, d.statusSaved = key, now
	return nil
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

// scanIntervalFor is the host's ScanInterval: the default for the daemon,
// none for an external (task != "").
func scanIntervalFor(task string) time.Duration {
	if task != "" {
		return -1
	}
	return 0
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

// control consumes the control queue. A message is
// acknowledged once handled: its configs saved durably (or rejected by
// their tasks), its controls done, its errors reported. One whose
// accepted configs could not be saved before the daemon began to exit
// (the state directory full, say) is not: it comes again at the next
// start, and the messages behind it with it.
func (d *Daemon) control(ctx context.Context) {
	cons, err := d.tr.Consume(ctx, d.opts.ControlQueue)
	if err != nil {
		d.log.Error("control queue: cannot consume", "queue", d.opts.ControlQueue, "error", err)
		return
	}
	defer cons.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case dl, ok := <-cons.C():
			if !ok {
				return
			}
			err := d.handleControl(ctx, dl.Msg)
			if err != nil {
				// Named by its fields, never by its values: a control
				// message carries configs, and configs carry secrets.
				details := map[string]any{"fields": fieldPaths(dl.Msg)}
				if errors.Is(err, host.ErrNotSaved) {
					// No verdict either: the message is not done.
					d.host.Out(oob.ChannelAlert, "main", fmt.Sprintf("control message not acknowledged, to be applied again at the next start: %v", err), details)
					return
				}
				d.host.Out(oob.ChannelError, "main", fmt.Sprintf("control message rejected: %v", err), details)
			}
			d.saveReasons()
			d.reply(dl.Msg, err)
			if err := dl.Ack(); err != nil {
				d.log.Warn("control queue: ack failed; the message may be applied again", "error", err)
			}
		}
	}
}

// Bounds of fieldPaths: how deep it names keys, and how many.
const (
	fieldPathDepth = 4
	fieldPathMax   = 64
)

// fieldPaths names the fields of a message without their values, for an
// error record about it: the key paths (".multimodule.config.Task.key",
// list items as "[i]"), sorted, down to fieldPathDepth levels, at most
// fieldPathMax of them (then "…").
func fieldPaths(m message.Message) []string {
	var out []string
	var walk func(prefix string, v any, depth int)
	walk = func(prefix string, v any, depth int) {
		if depth > fieldPathDepth {
			return
		}
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				p := prefix + "." + k
				if strings.HasPrefix(k, ".") && prefix == "" {
					p = k
				}
				out = append(out, p)
				walk(p, v[k], depth+1)
			}
		case []any:
			for i, e := range v {
				if _, ok := e.(map[string]any); ok {
					walk(fmt.Sprintf("%s[%d]", prefix, i), e, depth+1)
				}
			}
		}
	}
	walk("", map[string]any(m), 0)
	if len(out) > fieldPathMax {
		out = append(out[:fieldPathMax], "…")
	}
	return out
}

// knownName reports whether s looks like a name (a control type, say)
// rather than data: short, letters, digits and "_" only. Only such
// strings are quoted back in errors.
func knownName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// HandleControl applies one control message.
func (d *Daemon) handleControl(ctx context.Context, m message.Message) error {
	mm, ok := m[".multimodule"].(map[string]any)
	if !ok {
		return errors.New(`a control message must have a ".multimodule" map`)
	}
	var errs []error
	handled := false
	if c, ok := mm["config"]; ok {
		handled = true
		cfg, ok := c.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf(".multimodule.config must be a map, got %T", c))
		} else if err := d.host.ConfigureAllContext(ctx, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if c, ok := mm["control"]; ok {
		handled = true
		list, ok := c.([]any)
		if !ok {
			errs = append(errs, fmt.Errorf(".multimodule.control must be a list, got %T", c))
		}
		for i, item := range list {
			ctl, ok := item.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Errorf(".multimodule.control[%d] must be a map", i))
				continue
			}
			switch ctl["type"] {
			case "failsafe", "unfailsafe":
				name, _ := ctl["task"].(string)
				var err error
				if ctl["type"] == "failsafe" {
					reason, _ := ctl["reason"].(string)
					err = d.failsafe(name, map[string]any{"summary": "failsafed by an operator: " + reason, "reason": reason}, "operator")
				} else {
					err = d.unfailsafe(name)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf(".multimodule.control[%d] %v: %w", i, ctl["type"], err))
				}
			case "cleanly_exit":
				select {
				case d.exitCh <- exitRequest{exitExternals: message.Truthy(ctl["exit_externals"]), reason: "cleanly_exit"}:
				default:
				}
			default:
				typ, _ := ctl["type"].(string)
				if !knownName(typ) {
					typ = fmt.Sprintf("(a %T that is not a type name)", ctl["type"])
				}
				errs = append(errs, fmt.Errorf(".multimodule.control[%d]: unknown type %s (known: cleanly_exit, failsafe, unfailsafe)", i, typ))
			}
		}
	}
	if !handled {
		errs = append(errs, errors.New(".multimodule has neither config nor control"))
	}
	return errors.Join(errs...)
}
