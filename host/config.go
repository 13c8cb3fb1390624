package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// Configure sets the config of one task: it is saved in the state
// directory, and the task is loaded (or reconfigured, or moved) as its
// placement says. An identical config does nothing.
func (h *Host) Configure(name string, cfg map[string]any) error {
	return h.ConfigureAll(map[string]any{name: cfg})
}

// ConfigureAll applies a whole config map (task name → config); tasks not
// named keep their config. Every config is recorded before any task is
// (re)loaded, so that tasks configured together see each other's config
// from their first message (a producer never runs before the Router it
// feeds is configured). Errors are joined; the good tasks are configured
// anyway. It waits until the host's shutdown begins at most.
//
// Only a config its task accepted is saved (see ConfigureAllContext).
func (h *Host) ConfigureAll(all map[string]any) error {
	return h.ConfigureAllContext(h.ctx, all)
}

// ErrNotSaved is wrapped by the error of ConfigureAllContext when a config
// its task accepted could not be made durable before ctx ended (or the
// host shut down): the caller must not treat the change as done (the
// daemon leaves such a control message unacknowledged, so it comes again).
var ErrNotSaved = errors.New("host: config not saved")

// ConfigureAllContext is ConfigureAll. Every changed config goes to its
// task first: a task hosted here is loaded and given the config, and only
// a config the task accepts is saved to the state directory; a rejected
// one is reported and not saved, and the task keeps the config it runs
// with (or, without one, stays unconfigured, its messages waiting). A
// config that no task here can try (an external's, a failsafed task's,
// one whose task failed to load) is saved as it is: its task's own
// process tries it (see Options.ReadOnlyConfig). So is one whose task has
// not answered after a second (loading, or busy): the caller is not held
// up, and if the task rejects the config, the file gets back what the
// task runs with, or what it held before.
//
// It returns once every config to save is durable (one group commit,
// store.SaveConfigs). A failing save is retried, with an alert each
// time, until it succeeds or ctx ends (then the error wraps ErrNotSaved).
// A task that accepted a config handles nothing more until the config is
// saved, so that what it did under a config is never ahead of the state
// directory.
func (h *Host) ConfigureAllContext(ctx context.Context, all map[string]any) error {
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
		if err == nil && h.opts.CheckConfig != nil {
			err = h.opts.CheckConfig(name, cfg)
		}
		if err != nil {
			errs = append(errs, &ConfigError{Task: name, Err: err})
			continue
		}
		valid[name] = cfg
	}
	var changed []string
	commits := map[string]*configCommit{}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	for _, name := range slices.Sorted(maps.Keys(valid)) {
		cfg := valid[name]
		key := configKey(cfg)
		if h.confKeys[name] == key {
			continue
		}
		h.configs[name] = cfg
		h.confKeys[name] = key
		delete(h.failures, name) // a new config deserves a new try
		changed = append(changed, name)
		if !h.opts.ReadOnlyConfig {
			c := newConfigCommit(key)
			if old := h.commits[name]; old != nil {
				old.report(superseded)
			}
			h.commits[name] = c
			commits[name] = c
		}
	}
	h.mu.Unlock()
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
	// Each task is brought to its config (loaded, reconfigured, moved)
	// and its verdict awaited: accepted (save it), rejected (do not),
	// superseded by a newer config (that one's caller saves it), untried
	// (no runner here: save it as it is), or pending: a task that takes
	// longer (an exec task in its handshake) holds up neither the caller
	// (the daemon's control queue) nor the other tasks; its config is
	// saved as it is, and put back as it was if the task rejects it
	// (configReport).
	saves := map[string]map[string]any{}
	var savesMu sync.Mutex
	results := make([]error, len(changed))
	verdicts := make([]configVerdict, len(changed))
	apply := func(i int) {
		name := changed[i]
		results[i] = h.reconcile(name, loadWait)
		c := commits[name]
		if c == nil {
			return
		}
		v := h.verdict(ctx, name, c)
		if v == pending {
			prev, err := h.opts.Store.LoadConfig(name)
			h.mu.Lock()
			c.detached, c.prev = err == nil, prev
			h.mu.Unlock()
			select {
			case v = <-c.verdict: // came meanwhile
				h.mu.Lock()
				c.detached = false
				h.mu.Unlock()
			default:
			}
		}
		verdicts[i] = v
		switch v {
		case rejected:
			if results[i] == nil {
				results[i] = fmt.Errorf("task %s rejected its config and keeps the previous one (its reason is on the error channel)", name)
			}
		case accepted, untried, pending:
			savesMu.Lock()
			saves[name] = valid[name]
			savesMu.Unlock()
		case abandoned:
			results[i] = errors.Join(results[i], fmt.Errorf("%w: task %s: gave up waiting for it to take the config: %v", ErrNotSaved, name, context.Cause(ctx)))
		}
	}
	// The Router on its own, first; then the others a few at a time: a
	// load mostly waits (for the bus to create the queue's consumer, for
	// the disk to sync the task's status file), so a thousand tasks
	// configured at once load in parallel.
	// The Router's config is saved on its own too: every message goes
	// through the Router, which handles none while its config is not
	// saved.
	rest := 0
	if len(changed) > 0 && changed[0] == RouterName {
		apply(0)
		rest = 1
		if err := h.commit(ctx, saves, commits, RouterName); err != nil {
			errs = append(errs, err)
		}
	}
	parallel(rest, len(changed), apply)
	if err := h.commit(ctx, saves, commits, slices.Collect(maps.Keys(commits))...); err != nil {
		errs = append(errs, err)
	}
	// Whoever follows config changes (the external supervisor, whose
	// processes read the saved file) is told once the save is done.
	if h.opts.OnConfigChanged != nil {
		for _, name := range changed {
			h.opts.OnConfigChanged(name, valid[name])
		}
	}
	for i, err := range results {
		if err != nil {
			// A config its task rejected is not saved: the task keeps
			// what it runs with. Any other failure (a load error, an
			// unknown task) leaves the config recorded and saved.
			errs = append(errs, &ConfigError{Task: changed[i], Err: err, Kept: verdicts[i] != rejected})
		}
	}
	return errors.Join(errs...)
}

// ConfigError is what ConfigureAll returns for one task (joined with the
// others'): its config was refused (Kept false: the task keeps its
// previous config), or recorded and saved but the task could not be
// loaded with it (Kept true; an unknown task wraps ErrUnknownTask).
type ConfigError struct {
	Task string
	Err  error
	Kept bool
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

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

// checkExternal refuses is_external for a stateless task (only
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
	if err := registry.ValidateName(name); err != nil {
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
// in every task's config, which would otherwise be ignored
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
		h.out(oob.ChannelError, h.opts.Process, "restore configs: "+loadErr.Error(), nil)
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
	return registry.CopyConfig(cfg), true
}

// Configs returns a copy of every desired config.
func (h *Host) Configs() map[string]map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]map[string]any, len(h.configs))
	for k, v := range h.configs {
		out[k] = registry.CopyConfig(v)
	}
	return out
}

// Lookup returns the definition of task name from the host's sources.
func (h *Host) Lookup(name string) (task.Definition, bool) { return h.opts.Sources.Lookup(name) }
