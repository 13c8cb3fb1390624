package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// externalLoop is what an external process (-m Task) does besides hosting
// its task: follow the configs the daemon saves (so a config change
// reaches it without a restart) and keep its status file current (fd and
// thread counts for the status view).
func (d *Daemon) externalLoop(ctx context.Context) {
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
	// and the watch above would never reach the task: reload once, now
	// that the watch is in place.
	reload := time.NewTimer(time.Millisecond)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if strings.HasSuffix(filepath.Base(ev.Name), ".conf") && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				reload.Reset(20 * time.Millisecond)
			}
		case <-reload.C:
			if err := d.host.RestoreConfigs(); err != nil {
				d.log.Error("external: reloading configs", "error", err)
			}
		case <-status.C:
			if err := d.writeMainStatus(); err != nil {
				d.log.Error("external: status", "error", err)
			}
		}
	}
}
