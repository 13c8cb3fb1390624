package host

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// Configure sets the config of one task (SPEC 8): it is saved in the state
// directory, and the task is loaded (or reconfigured, or moved) as its
// placement says. An identical config does nothing.
func (h *Host) Configure(name string, cfg map[string]any) error {
	if err := task.ValidateName(name); err != nil {
		return fmt.Errorf("host: configure: %w", err)
	}
	norm, err := message.Normalize(map[string]any(cfg))
	if cfg == nil {
		norm, err = message.Message{}, nil
	}
	if err != nil {
		return fmt.Errorf("host: configure %s: %w", name, err)
	}
	cfg = map[string]any(norm)
	key := configKey(cfg)

	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	changed := h.confKeys[name] != key
	if changed {
		h.configs[name] = cfg
		h.confKeys[name] = key
		delete(h.failures, name) // a new config deserves a new try
	}
	h.mu.Unlock()
	if changed {
		if err := h.opts.Store.SaveConfig(name, cfg); err != nil {
			h.out("error", name, "save config: "+err.Error(), nil)
		}
	}
	return h.reconcile(name)
}

// ConfigureAll applies a whole config map (task name → config), task by
// task; tasks not named keep their config. Errors are joined; the good
// tasks are configured anyway.
func (h *Host) ConfigureAll(all map[string]any) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(all)) {
		cfg, ok := all[name].(map[string]any)
		if !ok {
			if m, isMsg := all[name].(message.Message); isMsg {
				cfg, ok = map[string]any(m), true
			}
		}
		if !ok {
			errs = append(errs, fmt.Errorf("host: config of task %q must be a map, got %T", name, all[name]))
			continue
		}
		if err := h.Configure(name, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RestoreConfigs loads every saved <Task>.conf from the state directory
// and applies it, so tasks get their last config back after a restart
// with no resend. Corrupt files are reported and skipped.
func (h *Host) RestoreConfigs() error {
	all, err := h.opts.Store.LoadAllConfigs()
	if err != nil {
		h.out("error", h.opts.Process, "restore configs: "+err.Error(), nil)
	}
	m := make(map[string]any, len(all))
	for k, v := range all {
		m[k] = v
	}
	if err2 := h.ConfigureAll(m); err2 != nil {
		err = errors.Join(err, err2)
	}
	return err
}

// Config returns a copy of the desired config of task name, and whether it
// has one.
func (h *Host) Config(name string) (map[string]any, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cfg, ok := h.configs[name]
	if !ok {
		return nil, false
	}
	return task.CopyConfig(cfg), true
}

// Configs returns a copy of every desired config.
func (h *Host) Configs() map[string]map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]map[string]any, len(h.configs))
	for k, v := range h.configs {
		out[k] = task.CopyConfig(v)
	}
	return out
}
