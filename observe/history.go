package observe

import (
	"context"
	"sync"
	"time"
)

// HistoryPoints is how many rate samples a task's history keeps: with
// the default step of 10 s, the last 5 minutes.
const HistoryPoints = 30

// RateHistory is a task's handled-message rate over the last minutes,
// as the daemon sampled it: PerSec[i] is the mean rate over the step
// that ended at End - (len(PerSec)-1-i)*StepSeconds, oldest first.
type RateHistory struct {
	StepSeconds float64   `json:"step_s"`
	End         float64   `json:"end,omitempty"` // unix seconds of the newest sample
	PerSec      []float64 `json:"per_sec"`
}

// rateRing is one task's samples: the handled counter and time of the
// last snapshot, and a ring of the rates between snapshots.
type rateRing struct {
	at      time.Time
	handled uint64
	rates   [HistoryPoints]float64
	next, n int // where the next rate goes; how many are kept
}

// rateHistory keeps every task's rate ring. Memory is bounded: one ring
// per task of the last sample, dropped when the task is gone.
type rateHistory struct {
	step time.Duration
	mu   sync.Mutex
	last time.Time // the last sample's time
	ring map[string]*rateRing
}

func newRateHistory(step time.Duration) *rateHistory {
	return &rateHistory{step: step, ring: map[string]*rateRing{}}
}

// sample records the tasks' handled counters at time at: each task's
// rate since its previous sample goes into its ring, a task seen the
// first time starts with no rate, a task absent is dropped. A sample
// not later than the previous one is ignored (a snapshot reused).
func (h *rateHistory) sample(at time.Time, tasks []Task) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !at.After(h.last) {
		return
	}
	h.last = at
	seen := make(map[string]struct{}, len(tasks))
	for _, t := range tasks {
		seen[t.Task] = struct{}{}
		r := h.ring[t.Task]
		if r == nil {
			h.ring[t.Task] = &rateRing{at: at, handled: t.Counters.Handled}
			continue
		}
		dn := t.Counters.Handled
		if dn >= r.handled {
			dn -= r.handled
		} // else the counter started again (a restarted process): all it counts is new
		r.rates[r.next] = float64(dn) / at.Sub(r.at).Seconds()
		r.next = (r.next + 1) % HistoryPoints
		if r.n < HistoryPoints {
			r.n++
		}
		r.at, r.handled = at, t.Counters.Handled
	}
	for name := range h.ring {
		if _, ok := seen[name]; !ok {
			delete(h.ring, name)
		}
	}
}

// of returns task's history, oldest rate first; an unknown task has an
// empty one.
func (h *rateHistory) of(task string) *RateHistory {
	out := &RateHistory{StepSeconds: h.step.Seconds(), PerSec: []float64{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ring[task]
	if r == nil {
		return out
	}
	out.End = float64(r.at.UnixNano()) / 1e9
	out.PerSec = make([]float64, 0, r.n)
	for i := range r.n {
		out.PerSec = append(out.PerSec, r.rates[(r.next-r.n+i+HistoryPoints)%HistoryPoints])
	}
	return out
}

// withHistory returns snap with every task's rate history set, on a
// copy of its tasks (the cached snapshot is shared by every reader).
func (s *Server) withHistory(snap Snapshot) Snapshot {
	tasks := make([]Task, len(snap.Tasks))
	copy(tasks, snap.Tasks)
	for i := range tasks {
		tasks[i].RateHistory = s.hist.of(tasks[i].Task)
	}
	snap.Tasks = tasks
	return snap
}

// Start starts sampling the tasks' rates for their histories: once at
// once, then every Options.HistoryStep until Close.
func (s *Server) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.stopHistory != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopHistory = cancel
	s.wg.Add(1)
	go s.sampleHistory(ctx)
}

// sampleHistory samples the tasks every step until ctx ends. Its
// snapshots are the readers' cached ones: with a page open, sampling
// asks the daemon nothing more.
func (s *Server) sampleHistory(ctx context.Context) {
	defer s.wg.Done()
	tick := time.NewTicker(s.hist.step)
	defer tick.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, s.hist.step)
		snap, err := cached{s}.Snapshot(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Debug("rate history: no snapshot", "error", err)
		}
		if err == nil {
			at := snap.Time
			if at.IsZero() {
				at = time.Now()
			}
			s.hist.sample(at, snap.Tasks)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
