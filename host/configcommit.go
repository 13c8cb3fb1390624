package host

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
)

// commit saves the configs of names among saves (saveConfigs) and lets
// their tasks go on: their commits are done.
func (h *Host) commit(ctx context.Context, saves map[string]map[string]any, commits map[string]*configCommit, names ...string) error {
	some := make(map[string]map[string]any, len(names))
	for _, name := range names {
		if cfg, ok := saves[name]; ok {
			some[name] = cfg
		}
	}
	err := h.saveConfigs(ctx, some)
	h.mu.Lock()
	for _, name := range names {
		if c := commits[name]; c != nil && h.commits[name] == c && !c.detached {
			delete(h.commits, name)
		}
	}
	h.mu.Unlock()
	for _, name := range names {
		if c := commits[name]; c != nil {
			close(c.saved) // the task, if it accepted the config, goes on
			delete(commits, name)
		}
	}
	return err
}

// configVerdict is what became of a config change (configCommit).
type configVerdict int

const (
	untried    configVerdict = iota // no runner here tried it
	accepted                        // its task runs with it
	rejected                        // its task refused it
	superseded                      // a newer config replaced it first
	abandoned                       // the caller stopped waiting for the verdict
	pending                         // its task has not said yet (still loading)
)

// verdictWait is how long ConfigureAllContext waits for a task's verdict
// on its config, once it waited for its load as long as reconcile does.
const verdictWait = time.Second

// configCommit is a config change waiting for its task's verdict, and
// then for its save. The runner reports (configReport) when it applies
// the config; one that accepted it waits for saved before it goes on.
type configCommit struct {
	key     string
	verdict chan configVerdict // buffered: the first report only
	once    sync.Once
	saved   chan struct{} // closed once ConfigureAll is done saving
	// detached (guarded by Host.mu): ConfigureAll saved the config
	// before its task's verdict (pending); prev is what the file held
	// before (nil: no file), put back if the task rejects the config.
	detached bool
	prev     map[string]any
}

func newConfigCommit(key string) *configCommit {
	return &configCommit{key: key, verdict: make(chan configVerdict, 1), saved: make(chan struct{})}
}

func (c *configCommit) report(v configVerdict) {
	c.once.Do(func() { c.verdict <- v })
}

// configReport is called by the runner of name after it applied (ok) or
// refused the config with key. It returns what to wait for before the
// runner goes on (nil: nothing) and, for a refused config that was saved
// before the task's verdict, the config the file held before (nil: none).
func (h *Host) configReport(name, key string, ok bool) (<-chan struct{}, map[string]any) {
	h.mu.Lock()
	c := h.commits[name]
	if c == nil || c.key != key {
		h.mu.Unlock()
		return nil, nil
	}
	detached, prev := c.detached, c.prev
	if detached {
		delete(h.commits, name) // this was its verdict
	}
	h.mu.Unlock()
	if !ok {
		c.report(rejected)
		if detached {
			<-c.saved // then put back what was there
			return nil, prev
		}
		return nil, nil
	}
	c.report(accepted)
	return c.saved, nil
}

// verdict waits for what the task name makes of the config of c: the
// report of its runner; untried when no runner here has it (not hosted
// here, failed to load) or the runner stopped before applying it;
// pending when the task is still loading, or has not said within
// verdictWait.
func (h *Host) verdict(ctx context.Context, name string, c *configCommit) configVerdict {
	h.mu.Lock()
	r := h.runners[name]
	_, loading := h.loading[name]
	h.mu.Unlock()
	if r == nil {
		select {
		case v := <-c.verdict: // a runner came and went meanwhile
			return v
		default:
		}
		if loading {
			return pending
		}
		return untried
	}
	t := time.NewTimer(verdictWait)
	defer t.Stop()
	select {
	case v := <-c.verdict:
		return v
	case <-r.done:
		select {
		case v := <-c.verdict:
			return v
		default:
			return untried
		}
	case <-t.C:
		return pending
	case <-ctx.Done():
		return abandoned
	}
}

// saveConfigs makes cfgs durable (store.SaveConfigs), retrying a failed
// save — a full or read-only file system — with an alert each time, until
// it succeeds or ctx ends or the host shuts down.
func (h *Host) saveConfigs(ctx context.Context, cfgs map[string]map[string]any) error {
	if len(cfgs) == 0 || h.opts.ReadOnlyConfig {
		return nil
	}
	backoff := configSaveRetryMin
	for attempt := 1; ; attempt++ {
		err := h.opts.Store.SaveConfigs(cfgs)
		if err == nil {
			if attempt > 1 {
				h.out(oob.ChannelLog, h.opts.Process, fmt.Sprintf("configs of %s saved (attempt %d)", strings.Join(slices.Sorted(maps.Keys(cfgs)), ", "), attempt), nil)
			}
			return nil
		}
		// Only the tasks whose file is not saved yet are tried again: the
		// others are durable.
		failed := store.FailedConfigs(err)
		if len(failed) == 0 {
			return err // not the file system's doing: another try fails the same way
		}
		for name := range cfgs {
			if !failed[name] {
				delete(cfgs, name)
			}
		}
		h.out(oob.ChannelAlert, h.opts.Process, fmt.Sprintf("configs not saved (attempt %d), retrying in %v; the tasks that accepted them wait: %v", attempt, backoff, err), nil)
		// The host's shutdown is looked for every configSaveRetryMin: it
		// waits for the tasks that wait for this save.
		for until := time.Now().Add(backoff); time.Now().Before(until); {
			t := time.NewTimer(min(time.Until(until), configSaveRetryMin))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: %v", ErrNotSaved, err)
			}
			if h.isClosing() {
				return fmt.Errorf("%w (shutting down): %v", ErrNotSaved, err)
			}
		}
		backoff = min(2*backoff, configSaveRetryMax)
	}
}

// How often a failed config save is tried again.
const (
	configSaveRetryMin = 250 * time.Millisecond
	configSaveRetryMax = 10 * time.Second
)

func (h *Host) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}
