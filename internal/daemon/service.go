package daemon

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/internal/sdnotify"
)

// service is the daemon's side of a service manager (systemd,
// Type=notify): READY=1 once it serves, WATCHDOG=1 pings while its host
// answers, RELOADING=1 … READY=1 around a SIGHUP reload of the config
// file, STOPPING=1 when the orderly exit begins. Without NOTIFY_SOCKET it
// only handles SIGHUP. External processes have none (nil).
type service struct {
	n      *sdnotify.Notifier
	hup    chan os.Signal
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reload loop
	dog    sync.WaitGroup // the watchdog
	stopDg context.CancelFunc
}

// newService takes the service manager's variables out of the
// environment (so the bus, externals and exec tasks this process starts
// do not inherit them) and catches SIGHUP from now on, so a reload sent
// while the daemon starts waits for it instead of killing it. Only the
// daemon itself has one.
func (d *Daemon) newService() *service {
	if d.opts.Task != "" {
		return nil
	}
	n, err := sdnotify.FromEnv()
	if err != nil {
		d.log.Error("service manager notification", "error", err)
	}
	s := &service{n: n, hup: make(chan os.Signal, 1)}
	signal.Notify(s.hup, syscall.SIGHUP)
	return s
}

// serviceReady tells the service manager the daemon serves and starts
// the watchdog pings and the SIGHUP reloads, until serviceStopping.
func (d *Daemon) serviceReady() {
	s := d.svc
	if s == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() { d.reloadLoop(ctx) })
	if p := s.n.Watchdog(); p > 0 {
		dctx, stop := context.WithCancel(context.Background())
		s.stopDg = stop
		s.dog.Go(func() { d.watchdog(dctx, p/2) })
	}
	d.notify("READY=1", "STATUS=serving; control queue "+d.opts.ControlQueue)
}

// serviceStopping tells the service manager the orderly exit begins and
// stops reloading (a reload under way ends first: the host is still up).
// The watchdog keeps pinging until serviceClose.
func (d *Daemon) serviceStopping(reason string) {
	s := d.svc
	if s == nil {
		return
	}
	d.notify("STOPPING=1", "STATUS=stopping: "+reason)
	signal.Stop(s.hup)
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// serviceClose ends the watchdog pings; Run defers it.
func (d *Daemon) serviceClose() {
	s := d.svc
	if s == nil {
		return
	}
	signal.Stop(s.hup)
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.stopDg != nil {
		s.stopDg()
	}
	s.dog.Wait()
}

// notify sends state lines, logging (not returning) a failure: the
// daemon runs on without its service manager's notice.
func (d *Daemon) notify(lines ...string) {
	if err := d.svc.n.Notify(lines...); err != nil {
		d.log.Error("service manager notification", "error", err)
	}
}

// reloadLoop re-reads the config file on each SIGHUP (systemctl reload).
func (d *Daemon) reloadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.svc.hup:
			d.reload()
		}
	}
}

// reload re-reads and applies -c. A file that does not load keeps the
// running config (loadConfigFile reports the error on the error channel)
// and the status says so; the daemon serves on either way.
func (d *Daemon) reload() {
	d.notify("RELOADING=1", sdnotify.MonotonicUSec(), "STATUS=reloading the config file")
	status := "STATUS=serving; control queue " + d.opts.ControlQueue
	switch {
	case d.opts.ConfigFile == "":
		d.log.Info("reload (SIGHUP): no config file (-c) to re-read")
	default:
		if err := d.loadConfigFile(); err != nil {
			status = "STATUS=serving; config file not applied, the running config stays: " + strings.ReplaceAll(err.Error(), "\n", " ")
		} else {
			d.log.Info("reload (SIGHUP): config file applied", "file", d.opts.ConfigFile)
		}
	}
	d.notify("READY=1", status)
}

// watchdog pings every period while the host answers (takes and releases
// its lock): a daemon whose host is stuck stops pinging, and the service
// manager kills it (SIGABRT: the Go runtime writes every goroutine's
// stack to stderr, the journal) and restarts it.
func (d *Daemon) watchdog(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		_ = d.host.Loaded()
		d.notify("WATCHDOG=1")
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
