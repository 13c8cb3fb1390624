package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/tasks/monitortask"
	"github.com/multimodule/multimodule/tasks/oobtask"
	"github.com/multimodule/multimodule/transit"
)

// ErrMainFailsafe refuses to failsafe the daemon itself.
var ErrMainFailsafe = errors.New("the daemon itself is never failsafed")

// failsafe stops a task until a human clears it: the failsafe
// file holds the alert (or the operator's reason); an external process is
// killed, an internal task unloaded; its messages wait in its queue.
func (m *mainRole) failsafe(name string, alert map[string]any, by string) error {
	d := m.d
	if name == monitor.DaemonTask || name == monitortask.Name {
		return ErrMainFailsafe
	}
	if err := registry.ValidateName(name); err != nil {
		return err
	}
	if name == oobtask.Name {
		// The records of every external process (their errors, the
		// reasons for what they do) come through it.
		return fmt.Errorf("%s is never failsafed: the records of the external processes go through it", name)
	}
	if why := d.reservedName(name); why != "" {
		return fmt.Errorf("%s is a reserved name (%s): there is no task to failsafe", name, why)
	}
	if _, configured := d.host.Config(name); !configured {
		if _, known := d.host.Lookup(name); !known {
			return fmt.Errorf("failsafe %s: %w, and it is not configured", name, d.notFound(name))
		}
	}
	if alert == nil {
		alert = map[string]any{}
	}
	alert["failsafed_by"] = by
	alert["failsafe_ts"] = float64(time.Now().UnixNano()) / 1e9
	if err := d.store.WriteFailsafe(name, alert); err != nil {
		return fmt.Errorf("failsafe %s: %w", name, err)
	}
	d.host.Out(oob.ChannelAlert, name, fmt.Sprintf("task %s failsafed (%s): it stays stopped, its messages wait, until `multimodule unfailsafe %s`", name, by, name), alert)
	if p := m.ext.process(name); p != nil {
		m.ext.markStopping(name)
		_ = p.Signal(9) // the task's process is killed
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// At once: what it fetched and has not handled waits on the bus (a
	// task failsafed for failing would fail it too).
	if err := d.host.UnloadNow(ctx, name); err != nil {
		d.host.Out(oob.ChannelError, name, fmt.Sprintf("failsafe %s: unload: %v", name, err), nil)
	}
	m.mon.ClearTask(name)
	d.host.Counters().Clear(name)
	return nil
}

// unfailsafe clears a failsafe: the task comes back and drains its queue.
func (m *mainRole) unfailsafe(name string) error {
	d := m.d
	if err := registry.ValidateName(name); err != nil {
		return err
	}
	if fs, err := d.store.ReadFailsafe(name); err == nil && fs == nil {
		return &controlNote{fmt.Sprintf("task %s is not failsafed: nothing to clear", name)}
	}
	if err := d.store.ClearFailsafe(name); err != nil {
		return fmt.Errorf("unfailsafe %s: %w", name, err)
	}
	m.mon.ClearTask(name)
	d.host.Out(oob.ChannelLog, name, fmt.Sprintf("task %s unfailsafed: starting it again", name), nil)
	m.noteUnfailsafe(name)
	m.ext.request(name)
	if err := d.host.Reconcile(name); err != nil {
		return fmt.Errorf("unfailsafe %s: %w", name, err)
	}
	return nil
}

// monitorHooks is what the MultiModule task (tasks/monitortask) reaches
// of the daemon.
type monitorHooks struct{ m *mainRole }

func (h monitorHooks) Counters() *host.Counters  { return h.m.d.host.Counters() }
func (h monitorHooks) Tasks() []host.TaskInfo    { return h.m.d.host.Tasks() }
func (h monitorHooks) Externals() map[string]int { return h.m.ext.running() }
func (h monitorHooks) QueueStats(ctx context.Context, all bool) ([]transit.QueueStat, error) {
	return h.m.d.tr.Stats(ctx, transit.QueueFilter{Waiting: !all})
}
func (h monitorHooks) Out(channel, task, text string, details map[string]any) {
	h.m.d.host.Out(channel, task, text, details)
}
func (h monitorHooks) Failsafe(name string, alert map[string]any) {
	if !h.m.monitorFailsafes.start(func() { _ = h.m.failsafe(name, alert, "monitor") }) {
		h.m.d.log.Warn("monitor: not failsafed, the daemon is exiting", "task", name)
	}
}
func (h monitorHooks) Evaluated() { h.m.saveReasons() }

var _ monitortask.Daemon = monitorHooks{}

// joined runs functions on goroutines of their own until it is closed,
// and close waits for them.
type joined struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// start runs fn on a goroutine of its own; false, without running it,
// once close was called.
func (j *joined) start(fn func()) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return false
	}
	j.wg.Go(fn)
	return true
}

// close refuses new functions and waits for those running.
func (j *joined) close() {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.wg.Wait()
}

// addMonitorFailsafes adds the actor that owns the monitor's failsafes:
// each runs on a goroutine of its own (one may wait a minute for its task
// to stop, and the monitor must not wait for it). Stopped, it waits for
// those under way; the monitor's later verdicts are reported, not
// carried out: the tasks are about to stop anyway, and a task that still
// misbehaves after the next start is failsafed then.
func (m *mainRole) addMonitorFailsafes(g *group) {
	stop := make(chan struct{})
	g.add(func() error {
		<-stop
		m.monitorFailsafes.close()
		return nil
	}, func(error) { close(stop) })
}
