package daemon

import (
	"context"
	"errors"
	"net/http"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/tasks/monitortask"
	"github.com/multimodule/multimodule/tasks/oobtask"
	"github.com/multimodule/multimodule/transit"
)

// mainRole is this program run as the daemon: it hosts every task not
// configured external, supervises the external ones (externals.go),
// monitors everything (the MultiModule task), takes control messages,
// and talks to its service manager and, with --http, to browsers and
// scrapers.
type mainRole struct {
	d   *Daemon
	ext *externals        // the supervisor of external processes
	mon *monitortask.Task // the MultiModule task
	// place runs this box's share of the placed tasks (placed.go).
	place *placedTasks
	svc   *service      // the service manager (service.go)
	http  *httpListener // the HTTP listener (--http), nil without one
	// monitorFailsafes are the failsafes the monitor decided, under way
	// (addMonitorFailsafes).
	monitorFailsafes joined
}

func (m *mainRole) process() string { return "main" }

func (m *mainRole) outOfBand(fromFlag oob.Handling) oob.Handling { return fromFlag }

// begin catches SIGHUP and talks to the service manager from the start
// (service.go).
func (m *mainRole) begin() func() {
	m.svc = m.newService()
	return m.serviceClose
}

// builtins: OutOfBand (records from the externals) and MultiModule (the
// monitor).
func (m *mainRole) builtins(reg *registry.Registry) {
	reg.MustRegister(oobTaskDefinition(m.d))
	reg.MustRegister(task.Definition{
		Namespace: task.Builtin,
		Name:      monitortask.Name,
		New:       func() (task.Task, error) { return m.mon, nil },
	})
}

// open takes the daemon's lock of the state directory, makes the
// supervisor and the monitor, and binds --http (before anything starts,
// so a bad address stops the daemon at once).
func (m *mainRole) open() (func(), error) {
	d := m.d
	release, err := d.store.LockDaemon()
	if err != nil {
		return nil, err
	}
	// The supervisor's safety pass and every load ask whether each task
	// is failsafed: from memory (store.KeepFailsafeView), the directory
	// looked at as often as the supervisor checks.
	d.store.KeepFailsafeView(failsafeCheckEvery)
	m.ext = newExternals(d)
	m.place = newPlacedTasks(d)
	m.mon = monitortask.New(monitorHooks{m}, d.store, d.log)
	if err := m.listenHTTP(); err != nil {
		release()
		return nil, err
	}
	return func() {
		m.closeHTTP()
		release()
	}, nil
}

func (m *mainRole) options(_ *transit.Options, h *host.Options) {
	h.CheckConfig = m.checkConfig
	out := h.Out
	h.Out = func(channel, taskName, text string, details map[string]any) {
		m.noteAlert(channel, taskName, text, details)
		out(channel, taskName, text, details)
	}
}

// placement: every task not configured external and without an external
// process running.
func (m *mainRole) placement(name string, _ task.Definition, cfg map[string]any) host.Placement {
	if host.IsExternal(cfg) || m.ext.alive(name) {
		return host.NotHere
	}
	return host.HostAndConsume
}

func (m *mainRole) configChanged(name string) {
	m.ext.request(name)
	m.place.changed()
}

// start adopts the externals still running from an earlier life before
// any config is applied, so the daemon never hosts a task whose external
// process runs; restores the saved configs (before any task is loaded
// for waiting messages); and loads the two built-in tasks the daemon
// always runs: records from externals, and the monitor.
func (m *mainRole) start() error {
	d := m.d
	m.ext.adoptAll()
	d.restoreConfigs()
	for _, name := range []string{oobtask.Name, monitortask.Name} {
		if _, ok := d.host.Config(name); !ok {
			if err := d.host.Configure(name, map[string]any{}); err != nil {
				d.log.Error("loading a built-in task", "task", name, "error", err)
			}
		}
	}
	return nil
}

func (m *mainRole) heapFloor() int64 { return DefaultHeapFloor }

// addIntake adds, in the order they stop: the service manager's link
// (STOPPING=1, no more reloads), the HTTP listener, the control queue,
// the monitor's failsafes.
func (m *mainRole) addIntake(g *group) {
	m.addService(g)
	if l := m.http; l != nil {
		stop := make(chan struct{})
		g.add(func() error {
			if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.d.log.Error("http listener", "error", err)
			}
			<-stop
			return nil
		}, func(error) {
			m.closeHTTP()
			close(stop)
		})
	}
	g.addUntilStopped(m.control)
	m.addMonitorFailsafes(g)
}

// ready starts the HTTP listener's sampling and names it in
// <state>/http.json.
func (m *mainRole) ready() { m.serveHTTP() }

func (m *mainRole) status(*store.Status) {}

// addUpkeep adds the supervisor of externals: it stops reconciling, then
// stops the externals when the exit asks for it (cleanly_exit with
// exit_externals, SIGINT) — else they keep running, and the next daemon
// adopts them — and ends the goroutines watching them.
func (m *mainRole) addUpkeep(g *group) {
	g.addUntilStopped(m.place.run)
	g.addUntilStopped(func(ctx context.Context) {
		m.ext.run(ctx)
		<-ctx.Done()
		if m.d.exit.exitExternals {
			m.ext.stopAll(m.d.shutdownContext())
		}
		m.ext.close()
	})
}
