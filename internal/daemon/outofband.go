package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/tasks/oobtask"
	"github.com/multimodule/multimodule/transit"
)

// newDispatcher builds the out-of-band dispatcher of this process. The
// daemon handles records as -o says; an external process forwards every
// record to the daemon's OutOfBand queue, so they are handled in one place
// (role.outOfBand).
func (d *Daemon) newDispatcher() (*oob.Dispatcher, error) {
	handling, err := oob.ParseHandling(d.opts.OOB)
	if err != nil {
		return nil, fmt.Errorf("-o: %w", err)
	}
	return oob.New(oob.Options{
		Handling:   d.role.outOfBand(handling),
		Stdout:     d.opts.Stdout,
		Stderr:     d.opts.Stderr,
		DebugLevel: d.opts.DebugLevel,
		Emit: func(ctx context.Context, m message.Message) error {
			if _, ok := m["source"]; ok {
				m["previous_source"] = m["source"]
			}
			m["source"] = oobtask.Name
			return d.sendQueue(ctx, host.RouterName, m)
		},
		SendQueue: d.sendQueue,
	}), nil
}

// sendQueue delivers a record message: through the host once it runs
// (local tasks get it in memory), through the bus before that.
func (d *Daemon) sendQueue(ctx context.Context, qname string, m message.Message) error {
	if h := d.host; h != nil {
		return h.Send(ctx, qname, m)
	}
	if d.tr != nil {
		return d.tr.Send(ctx, qname, m, transit.SendOptions{})
	}
	return errors.New("out-of-band: no transport yet")
}

// out is the host's OutFunc: every record of this process goes through
// the dispatcher.
func (d *Daemon) out(channel, taskName, text string, details map[string]any) {
	d.oob.Handle(context.Background(), oob.Record{
		Channel: channel, Task: taskName, Text: text, Details: details, Time: time.Now(),
	})
}

// builtinSource offers the built-in tasks bound to this process (the
// role's builtins).
func (d *Daemon) builtinSource() registry.Source {
	reg := registry.New()
	d.role.builtins(reg)
	return reg.Namespace(task.Builtin)
}

// oobTaskDefinition is the OutOfBand task of this process: its records
// handled by this process' dispatcher.
func oobTaskDefinition(d *Daemon) task.Definition {
	return task.Definition{
		Namespace: task.Builtin,
		Name:      oobtask.Name,
		New:       func() (task.Task, error) { return oobtask.New(d.oob), nil },
	}
}

// restoreConfigs applies the configs saved in the state directory.
func (d *Daemon) restoreConfigs() {
	if err := d.host.RestoreConfigs(); err != nil {
		d.log.Error("restoring saved configs", "error", err)
	}
}
