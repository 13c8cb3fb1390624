package daemon

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/multimodule/multimodule/internal/configfile"
	"github.com/multimodule/multimodule/oob"
)

// loadConfigFile reads -c and applies it. A file that fails to parse is
// reported (with file and line) and the running config stays.
func (d *Daemon) loadConfigFile(ctx context.Context) error {
	cfg, err := configfile.Load(d.opts.ConfigFile)
	if err != nil {
		d.host.Out(oob.ChannelError, "main", "config file not applied, keeping the running config: "+err.Error(), nil)
		return err
	}
	if err := d.host.ConfigureAllContext(ctx, cfg); err != nil {
		d.host.Out(oob.ChannelError, "main", "config file: "+err.Error(), nil)
		return err
	}
	d.host.Out(oob.ChannelDebug, "main", "config file applied: "+d.opts.ConfigFile, nil)
	return nil
}

// watchConfigFile re-reads the config file whenever it changes. It
// watches the file's directory, so editors that replace the file (write a
// temp, rename) are seen too; bursts of events are folded into one read.
func (d *Daemon) watchConfigFile(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.host.Out(oob.ChannelError, "main", "config file: cannot watch: "+err.Error(), nil)
		return
	}
	defer w.Close()
	path, err := filepath.Abs(d.opts.ConfigFile)
	if err != nil {
		path = d.opts.ConfigFile
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		d.host.Out(oob.ChannelError, "main", "config file: cannot watch "+filepath.Dir(path)+": "+err.Error(), nil)
		return
	}
	const settle = 50 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) != path || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
				continue
			}
			timer.Reset(settle)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			d.host.Out(oob.ChannelError, "main", "config file watch: "+err.Error(), nil)
		case <-timer.C:
			_ = d.loadConfigFile(ctx)
		}
	}
}
