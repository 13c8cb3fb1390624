package host

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// Configure sets the config of one task (SPEC 8): it is saved in the state
// directory, and the task is loaded (or reconfigured, or moved) as its
// placement says. An identical config does nothing.
func (h *Host) Configure(name string, cfg map[string]any) error {
	return h.ConfigureAll(map[string]any{name: cfg})
}

// ConfigureAll applies a whole config map (task name → config); tasks not
// named keep their config. Every config is recorded before any task is
// (re)loaded, so that tasks configured together see each other's config
// from their first message (a producer never runs before the Router it
// feeds is configured). It returns once every changed config is saved
// durably in the state directory (unless ReadOnlyConfig); the tasks load
// meanwhile. Errors are joined; the good tasks are configured anyway. A
// load is waited for a second at most (then it goes on in the
// background), and its failure is not returned: a task that fails to
// load is reported on the error channel and retried.
func (h *Host) ConfigureAll(all map[string]any) error {
	var errs []error
	// Checked before taking the lock: checkExternal asks the sources,
	// which may take time and log (an exec task's describe run), and a
	// log record may be sent to a queue, which takes the lock (an
	// external process forwards its records to the daemon).
	valid := make(map[string]map[string]any, len(all))
	for _, name := range slices.Sorted(maps.Keys(all)) {
		cfg, err := normalizeConfig(name, all[name])
		if err == nil {
			err = h.checkExternal(name, cfg)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		valid[name] = cfg
	}
	var changed []string
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	saves := map[string]map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(valid)) {
		cfg := valid[name]
		key := configKey(cfg)
		if h.confKeys[name] == key {
			continue
		}
		h.configs[name] = cfg
		h.confKeys[name] = key
		delete(h.failures, name) // a new config deserves a new try
		saves[name] = cfg
		changed = append(changed, name)
	}
	h.mu.Unlock()
	// The configs are saved (one group commit, durable when it ends:
	// store.SaveConfigs) while the tasks load: the loads wait mostly for
	// the bus, the save for the disk. Whoever follows config changes
	// (the external supervisor, whose processes read the saved file) is
	// told only once the save is done.
	saved := make(chan struct{})
	if !h.opts.ReadOnlyConfig && len(saves) > 0 {
		go func() {
			defer close(saved)
			if err := h.opts.Store.SaveConfigs(saves); err != nil {
				h.out("error", h.opts.Process, "save configs: "+err.Error(), nil)
			}
		}()
	} else {
		close(saved)
	}
	var tellMu sync.Mutex
	var later []string // changes to tell once saved
	tell := func(name string) {
		if h.opts.OnConfigChanged == nil {
			return
		}
		select {
		case <-saved:
			h.opts.OnConfigChanged(name, saves[name])
		default:
			tellMu.Lock()
			later = append(later, name)
			tellMu.Unlock()
		}
	}
	// The Router first: everything else emits into it.
	slices.SortStableFunc(changed, func(a, b string) int {
		switch {
		case a == RouterName && b != RouterName:
			return -1
		case b == RouterName && a != RouterName:
			return 1
		}
		return 0
	})
	// Each load is waited for loadWait at most: a task that takes longer
	// to build (an exec task in its handshake) goes on loading in the
	// background and holds up neither the caller (the daemon's control
	// queue) nor the other tasks. Its failure is reported (and retried) by
	// the load.
	results := make([]error, len(changed))
	apply := func(i int) {
		name := changed[i]
		// A running task acts on a new config only once it is saved, so
		// that what it did under a config is never ahead of the state
		// directory; a task loading for the first time loads meanwhile.
		h.mu.Lock()
		_, running := h.runners[name]
		h.mu.Unlock()
		if running {
			<-saved
		}
		results[i] = h.reconcile(name, loadWait)
		tell(name)
	}
	// The Router on its own, first; then the others a few at a time: a
	// load mostly waits (for the bus to create the queue's consumer, for
	// the disk to sync the task's status file), so a thousand tasks
	// configured at once load in parallel.
	rest := 0
	if len(changed) > 0 && changed[0] == RouterName {
		apply(0)
		rest = 1
	}
	parallel(rest, len(changed), apply)
	<-saved
	for _, name := range later {
		h.opts.OnConfigChanged(name, saves[name])
	}
	for _, err := range results {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// configureParallel bounds the tasks ConfigureAll saves or loads at once.
const configureParallel = 32

// parallel runs f(i) for i in [from, to), configureParallel at a time,
// and returns when all are done. A single call runs on this goroutine.
func parallel(from, to int, f func(i int)) {
	if to-from <= 1 {
		for i := from; i < to; i++ {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, configureParallel)
	for i := from; i < to; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// checkExternal refuses is_external for a stateless task (SPEC 10: only
// stateful tasks may run external; stateless ones run everywhere).
func (h *Host) checkExternal(name string, cfg map[string]any) error {
	if !IsExternal(cfg) {
		return nil
	}
	def, ok := h.opts.Sources.Lookup(name)
	if ok && !def.Stateful {
		return fmt.Errorf("host: task %s is stateless: only stateful tasks may run external (is_external refused, previous config kept)", name)
	}
	return nil
}

// Reconcile makes the hosting of task name in this process match its
// config and placement now (the supervisor calls it when an external
// process of the task has exited). Unlike ConfigureAll it waits for the
// load it needs (or one in progress) and returns its error.
func (h *Host) Reconcile(name string) error { return h.reconcile(name, fullWait) }

func normalizeConfig(name string, v any) (map[string]any, error) {
	if err := task.ValidateName(name); err != nil {
		return nil, fmt.Errorf("host: configure: %w", err)
	}
	var cfg map[string]any
	switch t := v.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		cfg = t
	case message.Message:
		cfg = t
	default:
		return nil, fmt.Errorf("host: config of task %q must be a map, got %T", name, v)
	}
	norm, err := message.Normalize(cfg)
	if err != nil {
		return nil, fmt.Errorf("host: configure %s: %w", name, err)
	}
	if err := checkFrameworkKeys(norm); err != nil {
		return nil, fmt.Errorf("host: config of task %q: %w", name, err)
	}
	return map[string]any(norm), nil
}

// checkFrameworkKeys refuses wrong types in the keys the framework reads
// in every task's config (SPEC 8), which would otherwise be ignored
// without a word: is_external must be a scalar (Perl truth),
// max_crash_redeliveries a whole number ≥ 0, intervals a map of name to a
// finite number of seconds ≥ 0.
func checkFrameworkKeys(cfg map[string]any) error {
	switch v := cfg["is_external"].(type) {
	case map[string]any, []any:
		return fmt.Errorf("is_external must be true or false, got %T", v)
	}
	if v, ok := cfg["max_crash_redeliveries"]; ok && v != nil {
		f, isNum := message.Float(v)
		if !isNum || f < 0 || f != math.Trunc(f) || f > 1e6 {
			return fmt.Errorf("max_crash_redeliveries must be a whole number ≥ 0, got %v", v)
		}
	}
	iv, ok := cfg["intervals"]
	if !ok || iv == nil {
		return nil
	}
	m, ok := iv.(map[string]any)
	if !ok {
		return fmt.Errorf("intervals must be a map of name to seconds, got %T", iv)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		f, ok := message.Float(m[k])
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return fmt.Errorf("intervals.%s must be a number of seconds ≥ 0, got %v", k, m[k])
		}
	}
	return nil
}

// RestoreConfigs loads every saved <Task>.conf from the state directory
// and applies it, so tasks get their last config back after a restart
// with no resend. Corrupt files are reported and skipped.
func (h *Host) RestoreConfigs() error {
	all, err := h.opts.Store.LoadAllConfigs()
	return h.restore(all, err)
}

// RestoreConfigsOf is RestoreConfigs for the named tasks only (those
// whose config files changed): a name without a saved config is skipped.
func (h *Host) RestoreConfigsOf(names []string) error {
	some := make(map[string]map[string]any, len(names))
	var errs []error
	for _, name := range names {
		cfg, err := h.opts.Store.LoadConfig(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cfg != nil {
			some[name] = cfg
		}
	}
	return h.restore(some, errors.Join(errs...))
}

// restore applies configs read from the state directory; loadErr, what
// reading them went wrong with, is reported and returned too.
func (h *Host) restore(configs map[string]map[string]any, loadErr error) error {
	if loadErr != nil {
		h.out("error", h.opts.Process, "restore configs: "+loadErr.Error(), nil)
	}
	m := make(map[string]any, len(configs))
	for k, v := range configs {
		m[k] = v
	}
	return errors.Join(loadErr, h.ConfigureAll(m))
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

// Lookup returns the definition of task name from the host's sources.
func (h *Host) Lookup(name string) (task.Definition, bool) { return h.opts.Sources.Lookup(name) }
