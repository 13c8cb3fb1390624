package daemon

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
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
