package host

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
)

// A task's status file written at load waits until no load has begun
// for statusQuiet, or statusMaxDelay after the load at the latest.
const (
	statusQuiet    = 250 * time.Millisecond
	statusMaxDelay = 5 * time.Second
)

// waitLoadsQuiet waits until the loads in progress have paused (see
// statusQuiet); false when ctx ended first.
func (h *Host) waitLoadsQuiet(ctx context.Context) bool {
	deadline := time.Now().Add(statusMaxDelay)
	for {
		wait := min(time.Until(time.Unix(0, h.lastLoad.Load()).Add(statusQuiet)), time.Until(deadline))
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// writeStatus writes the status of the task of r: the hosting process,
// its usage (the whole process's: shared with every task it hosts, unless
// it is the task's own external process), and the task's kind.
func (h *Host) writeStatus(r *runner) {
	u := h.usage()
	st := store.Status{
		PID:        h.self.PID,
		StartTime:  h.self.StartTime,
		Cmdline:    h.self.Cmdline,
		SaveTS:     float64(time.Now().UnixNano()) / 1e9,
		External:   h.opts.Process != "main",
		Shared:     h.opts.Process == "main",
		Stateful:   r.def.Stateful,
		FDs:        u.FDs,
		Threads:    u.Threads,
		RSSBytes:   u.RSSBytes,
		CPUSeconds: u.CPUSeconds,
		CoPID:      int(r.coPID.Load()),
	}
	if err := h.opts.Store.SaveStatus(r.name, st); err != nil {
		h.out(oob.ChannelError, r.name, "save status: "+err.Error(), nil)
	}
}

// usage samples this process's usage for the status files, at most
// every usageEvery: a burst of loads writes a status per task.
func (h *Host) usage() procid.Usage {
	h.usageMu.Lock()
	defer h.usageMu.Unlock()
	if now := time.Now(); now.Sub(h.usageAt) >= usageEvery {
		if u, err := procid.UsageOf(h.self.PID); err == nil {
			h.usageLast, h.usageAt = u, now
		}
	}
	return h.usageLast
}

// usageEvery is how old the usage in a status file may be (usage).
const usageEvery = time.Second

// Loaded lists the tasks hosted in this process.
func (h *Host) Loaded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.runners))
}

// TaskInfo describes a task hosted in this process.
type TaskInfo struct {
	Name       string
	Placement  Placement
	Stateful   bool
	Mailbox    int // messages waiting in its in-memory mailbox
	MailboxCap int
	CoPID      int // the pid of its co-process (exec tasks), or 0
}

// Tasks describes every task hosted in this process, sorted by name.
func (h *Host) Tasks() []TaskInfo {
	hosted := *h.hosted.Load()
	out := make([]TaskInfo, 0, len(hosted))
	for _, name := range slices.Sorted(maps.Keys(hosted)) {
		r := hosted[name]
		out = append(out, TaskInfo{Name: name, Placement: r.placement, Stateful: r.def.Stateful, Mailbox: r.local.Len(), MailboxCap: r.local.Cap(), CoPID: int(r.coPID.Load())})
	}
	return out
}

// Settled reports whether task name is hosted here and has caught up with
// its bus queue, so that sends from this process reach it in memory.
func (h *Host) Settled(name string) bool {
	r := (*h.hosted.Load())[name]
	return r != nil && !r.catchingUp.Load()
}

// Hosts reports whether task name is loaded (or being loaded or unloaded)
// in this process. The external supervisor never starts a task's own
// process while this is true: two owners would share its queue and state.
func (h *Host) Hosts(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runners[name] != nil || h.loading[name] != nil
}
