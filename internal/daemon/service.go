package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/internal/sdnotify"
)

// service is the daemon's side of a service manager (systemd,
// Type=notify): READY=1 once it serves, WATCHDOG=1 pings while its host
// answers, RELOADING=1 … READY=1 around a SIGHUP reload of the config
// file, STOPPING=1 when the orderly exit begins. Without NOTIFY_SOCKET it
// only handles SIGHUP. External processes have none.
type service struct {
	log    *slog.Logger
	n      *sdnotify.Notifier
	hup    chan os.Signal
	dog    sync.WaitGroup // the watchdog
	stopDg context.CancelFunc
	// alive is what a watchdog ping checks first: nothing until the
	// daemon is ready, then that its host answers.
	alive atomic.Pointer[func()]
}

// newService takes the service manager's variables out of the
// environment (so the bus, externals and exec tasks this process starts
// do not inherit them) and catches SIGHUP from now on, so a reload sent
// while the daemon starts waits for it instead of killing it.
func (m *mainRole) newService() *service {
	d := m.d
	n, err := sdnotify.FromEnv()
	if err != nil {
		d.log.Error("service manager notification", "error", err)
	}
	s := &service{log: d.log, n: n, hup: make(chan os.Signal, 1)}
	signal.Notify(s.hup, syscall.SIGHUP)
	// The watchdog may be armed from the start: ping while starting too.
	if p := n.Watchdog(); p > 0 {
		ctx, stop := context.WithCancel(context.Background())
		s.stopDg = stop
		s.dog.Go(func() { s.watchdog(ctx, p/2) })
	}
	return s
}

// addService adds the actor that, once the daemon is ready, tells the
// service manager it serves, makes the watchdog pings check the host and
// reloads the config file on each SIGHUP; stopped, it tells the service
// manager the orderly exit begins and stops reloading (a reload under
// way ends first: the host is still up). SIGHUP stays caught, and
// ignored, so that it cannot kill the orderly exit; the watchdog keeps
// pinging. Both end in serviceClose.
func (m *mainRole) addService(g *group) {
	d, s := m.d, m.svc
	ctx, cancel := context.WithCancel(context.Background())
	g.add(func() error {
		select {
		case <-d.readied:
		case <-ctx.Done():
			return nil
		}
		h := d.host
		check := func() { _ = h.Loaded() }
		s.alive.Store(&check)
		s.notify("READY=1", "STATUS=serving; control queue "+d.opts.ControlQueue)
		m.reloadLoop(ctx)
		return nil
	}, func(error) {
		s.notify("STOPPING=1", "STATUS=stopping: "+d.exit.reason)
		cancel()
	})
}

// serviceClose ends the watchdog pings and the catching of SIGHUP; Run
// calls it when it returns.
func (m *mainRole) serviceClose() {
	s := m.svc
	signal.Stop(s.hup)
	if s.stopDg != nil {
		s.stopDg()
	}
	s.dog.Wait()
}

// notify sends state lines, logging (not returning) a failure: the
// daemon runs on without its service manager's notice.
func (s *service) notify(lines ...string) {
	if err := s.n.Notify(lines...); err != nil {
		s.log.Error("service manager notification", "error", err)
	}
}

// reloadLoop re-reads the config file on each SIGHUP (systemctl reload).
func (m *mainRole) reloadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.svc.hup:
			m.reload(ctx)
		}
	}
}

// reload re-reads and applies -c. A file that does not load keeps the
// running config (loadConfigFile reports the error on the error channel)
// and the status says so; the daemon serves on either way.
func (m *mainRole) reload(ctx context.Context) {
	d := m.d
	m.svc.notify("RELOADING=1", sdnotify.MonotonicUSec(), "STATUS=reloading the config file")
	status := "STATUS=serving; control queue " + d.opts.ControlQueue
	switch {
	case d.opts.ConfigFile == "":
		d.log.Info("reload (SIGHUP): no config file (-c) to re-read")
	default:
		if err := d.loadConfigFile(ctx); err != nil {
			status = "STATUS=serving; config file not applied, the running config stays: " + strings.ReplaceAll(err.Error(), "\n", " ")
		} else {
			d.log.Info("reload (SIGHUP): config file applied", "file", d.opts.ConfigFile)
		}
	}
	m.svc.notify("READY=1", status)
}

// watchdog pings every period, from the start; once the daemon is ready,
// each ping first makes sure the host answers (takes and releases its
// lock): a daemon whose host is stuck stops pinging, and the service
// manager kills it (SIGABRT: the Go runtime writes every goroutine's
// stack to stderr, the journal) and restarts it.
func (s *service) watchdog(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if check := s.alive.Load(); check != nil {
			(*check)()
		}
		s.notify("WATCHDOG=1")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
