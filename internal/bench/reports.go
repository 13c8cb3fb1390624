package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	benchtasks "github.com/multimodule/multimodule/internal/bench/tasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/procid"
)

// reports collects what the bench tasks report on their queue.
type reports struct {
	mu       sync.Mutex
	changed  chan struct{}
	consumer map[string]message.Message // task → latest consumer report
	ready    map[string]message.Message // task → latest ready report
	firsts   []first                    // first message handled by each consumer instance
	configs  []message.Message          // config reports, in arrival order
	handled  map[string]int64           // task → count (scale's externals)
	producer message.Message
}

// first is the first message a consumer instance handled.
type first struct {
	task    string
	pid     int64
	process string
	ts      int64 // unix ns
}

func newReports() *reports {
	return &reports{
		changed:  make(chan struct{}),
		consumer: map[string]message.Message{},
		ready:    map[string]message.Message{},
		handled:  map[string]int64{},
	}
}

func (r *reports) add(m message.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	task, _ := m["task"].(string)
	switch m["kind"] {
	case "consumer":
		if old := r.consumer[task]; old == nil || int64Of(old["ts"]) <= int64Of(m["ts"]) || int64Of(old["pid"]) != int64Of(m["pid"]) {
			r.consumer[task] = m
		}
		if ft := int64Of(m["first_ts"]); ft != 0 {
			f := first{task: task, pid: int64Of(m["pid"]), ts: ft}
			f.process, _ = m["process"].(string)
			known := false
			for _, g := range r.firsts {
				if g == f {
					known = true
					break
				}
			}
			if !known {
				r.firsts = append(r.firsts, f)
			}
		}
	case "ready":
		r.ready[task] = m
	case "config":
		r.configs = append(r.configs, m)
	case "handled":
		r.handled[task] = max(r.handled[task], int64Of(m["count"]))
	case "producer":
		r.producer = m
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// wait calls f (under the lock) at once and after every report until it
// returns nil; it fails after timeout or when ctx ends.
func (r *reports) wait(ctx context.Context, timeout time.Duration, f func(r *reports) error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		err := f(r)
		ch := r.changed
		r.mu.Unlock()
		if err == nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w (waiting: %v)", ctx.Err(), err)
		case <-deadline.C:
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
	}
}

// snapshot returns the latest consumer report of each task named.
func (r *reports) snapshot(tasks []string) map[string]message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]message.Message{}
	for _, t := range tasks {
		out[t] = r.consumer[t]
	}
	return out
}

func int64Of(v any) int64 {
	n, _ := message.Int(v)
	return n
}

// window is the latency and throughput of consumers between two
// snapshots.
type window struct {
	hist     benchtasks.Histogram
	count    int64
	seconds  float64 // the longest consumer window
	received int64   // all-time count at the end
	gaps     int64
	dups     int64
}

func measure(base, end map[string]message.Message) window {
	var w window
	for task, e := range end {
		if e == nil {
			continue
		}
		b := base[task]
		w.hist.AddSparse(e["hist"], 1)
		w.received += int64Of(e["count"])
		w.gaps += int64Of(e["gaps"])
		w.dups += int64Of(e["dups"])
		var bCount, bTS int64
		if b != nil && int64Of(b["pid"]) == int64Of(e["pid"]) {
			w.hist.AddSparse(b["hist"], -1)
			bCount, bTS = int64Of(b["count"]), int64Of(b["last_ts"])
		} else {
			bTS = int64Of(e["first_ts"])
		}
		w.count += int64Of(e["count"]) - bCount
		if s := float64(int64Of(e["last_ts"])-bTS) / 1e9; s > w.seconds {
			w.seconds = s
		}
	}
	return w
}

func (w window) fill(res *Result, perInput int) {
	if w.seconds > 0 {
		res.MsgsPerSec = float64(w.count) / w.seconds / float64(max(perInput, 1))
	}
	res.P50us = float64(w.hist.Quantile(0.50)) / 1e3
	res.P90us = float64(w.hist.Quantile(0.90)) / 1e3
	res.P99us = float64(w.hist.Quantile(0.99)) / 1e3
	res.Maxus = float64(w.hist.Quantile(1)) / 1e3
}

// procSet samples the CPU and RSS of the processes involved.
type procSet struct {
	mu    sync.Mutex
	procs []*procSample
}

type procSample struct {
	name string
	pid  int
	cpu0 float64
	t0   time.Time
	cpu  float64 // percent over the window
	rss  uint64
}

func newProcSet() *procSet { return &procSet{} }

func (s *procSet) add(name string, pid int) {
	if pid <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.pid == pid {
			return
		}
	}
	p := &procSample{name: name, pid: pid}
	if u, err := procid.UsageOf(pid); err == nil {
		p.cpu0, p.t0, p.rss = u.CPUSeconds, time.Now(), u.RSSBytes
	}
	s.procs = append(s.procs, p)
}

// start begins the CPU window of every process.
func (s *procSet) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, p := range s.procs {
		if u, err := procid.UsageOf(p.pid); err == nil {
			p.cpu0, p.t0 = u.CPUSeconds, now
			p.rss = max(p.rss, u.RSSBytes)
		}
	}
}

// sample updates the largest RSS seen.
func (s *procSet) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if u, err := procid.UsageOf(p.pid); err == nil {
			p.rss = max(p.rss, u.RSSBytes)
		}
	}
}

// stop ends the CPU window and returns every process' figures.
func (s *procSet) stop() []Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := make([]Process, 0, len(s.procs))
	for _, p := range s.procs {
		if u, err := procid.UsageOf(p.pid); err == nil {
			if secs := now.Sub(p.t0).Seconds(); secs > 0 && !p.t0.IsZero() {
				p.cpu = (u.CPUSeconds - p.cpu0) / secs * 100
			}
			p.rss = max(p.rss, u.RSSBytes)
		}
		out = append(out, Process{Name: p.name, PID: p.pid, CPUPercent: round1(p.cpu), RSSBytes: p.rss})
	}
	return out
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// progress writes a live line while a scenario runs, and samples RSS.
func (e *env) progress(ctx context.Context, started time.Time, total time.Duration, tasks []string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var lastCount int64
		lastT := time.Now()
		for {
			select {
			case <-ctx.Done():
				if e.opts.Progress != nil {
					fmt.Fprint(e.opts.Progress, "\r\033[K")
				}
				return
			case <-tick.C:
			}
			e.procs.sample()
			if e.opts.Progress == nil {
				continue
			}
			var count int64
			for _, m := range e.reports.snapshot(tasks) {
				if m != nil {
					count += int64Of(m["count"])
				}
			}
			now := time.Now()
			rate := float64(count-lastCount) / now.Sub(lastT).Seconds()
			lastCount, lastT = count, now
			fmt.Fprintf(e.opts.Progress, "\r\033[K%s  %4.1fs/%.0fs  received %d  %s msgs/s",
				e.name, now.Sub(started).Seconds(), total.Seconds(), count, humanRate(max(rate, 0)))
		}
	}()
	return func() { cancel(); <-done }
}
