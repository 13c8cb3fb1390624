package host

import (
	"fmt"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transform"
)

// transformState applies an operator's {".multimodule": {"transform": …}}
// to the task's state.
func (r *runner) transformState(t map[string]any) {
	state := r.tc.State()
	if err := transform.Apply(message.Message(state), t, nil); err != nil {
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: state transform: %v", r.name, err), nil)
	}
	r.tc.SetState(state)
	r.h.out(oob.ChannelLog, r.name, fmt.Sprintf("task %s: state transformed", r.name), nil)
}

// applyConfig calls SetConfig when the config changed by content. Its
// verdict goes to the ConfigureAll that waits for it (configReport); once
// the task accepted a config, it handles nothing more until the config is
// saved.
func (r *runner) applyConfig(cfg map[string]any) {
	key := configKey(cfg)
	if r.configured && key == r.configKey {
		if saved, _ := r.h.configReport(r.name, key, true); saved != nil {
			<-saved
		}
		return
	}
	prev, prevKey := r.config, r.configKey
	r.config, r.configKey = cfg, key
	if c, ok := r.t.(task.Configurer); ok {
		err := r.safeCall("set_config", func() error { return c.SetConfig(r.tc, registry.CopyConfig(cfg)) })
		if err != nil {
			r.config, r.configKey = prev, prevKey
			r.rejected(key, err)
			return
		}
	}
	defer func() {
		if saved, _ := r.h.configReport(r.name, key, true); saved != nil {
			<-saved
		}
	}()
	if !r.configured {
		cs, ok := r.t.(CanonicalSender)
		r.canonical = ok && cs.SendsCanonical()
		ih, ok := r.t.(task.Inliner)
		r.inline.Store(ok && ih.HandlesInline())
	}
	r.configured = true
	if r.pider != nil {
		r.coPID.Store(int64(r.pider.PID()))
	}
	r.touched()
}

// rejected reports a config the task refused. A task that runs with an
// accepted config keeps it, and its saved config file is made to hold it
// again: a config its task could not try before it was saved (one sent
// while the task ran elsewhere, or was still loading) may be there. A
// task that has none stays unconfigured, its messages waiting, and says
// so on the alert channel: it waits for a config it accepts; its file
// gets back the config it held before, if the rejected one was saved
// before the task could try it.
func (r *runner) rejected(key string, err error) {
	// Reported before the verdict: whoever waits for it (a control
	// message's acknowledgement) comes after the report.
	if r.configured {
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: set config rejected, keeping the previous one: %v", r.name, err), nil)
	} else {
		r.h.out(oob.ChannelAlert, r.name, fmt.Sprintf("task %s: config rejected; the task has no config it accepts and waits, its messages waiting, for a new one: %v", r.name, err), nil)
	}
	_, prev := r.h.configReport(r.name, key, false)
	back := prev
	if r.configured {
		back = r.config
	}
	if back == nil || r.placement != HostAndConsume {
		return // a local copy's config is its own process's
	}
	if err := r.h.opts.Store.SaveConfigs(map[string]map[string]any{r.name: back}); err != nil {
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: putting back the saved config it runs with: %v", r.name, err), nil)
	}
}

func (r *runner) saveInterval() time.Duration {
	if d, ok := registry.IntervalOverride(r.config, "save_state"); ok {
		return d
	}
	return r.h.opts.SaveInterval
}

// touched notes that task code ran, so a stateful task's state may have
// changed: it is saved (if it did change) within the save interval. The
// timer is armed only then, so an idle task has none.
func (r *runner) touched() {
	if r.saveTimer != nil || !r.def.Stateful || !r.configured || r.closed {
		return
	}
	r.saveTimer = time.AfterFunc(r.saveInterval(), func() {
		r.post(func() {
			r.saveTimer = nil
			r.saveState(false)
		})
	})
}

// saveState snapshots the state and hands it to the saver when it
// changed since the last save; with wait, it always saves and returns once
// written.
func (r *runner) saveState(wait bool) {
	if !r.def.Stateful {
		return
	}
	state := r.tc.State()
	b, err := message.Marshal(message.Message(state))
	if err != nil {
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: state is not JSON-compatible, not saved: %v", r.name, err), nil)
		return
	}
	// A final save (wait) always writes, and only returns once written:
	// an earlier periodic save may still be queued, and the next owner of
	// the task (another process, after a move) reads the file at once.
	if !wait && string(b) == string(r.lastSaved) {
		return
	}
	r.lastSaved = b
	job := saveJob{task: r.name, state: message.Message(state).Copy()}
	if wait {
		job.done = make(chan struct{})
	}
	r.h.saveCh <- job
	if wait {
		<-job.done
	}
}
