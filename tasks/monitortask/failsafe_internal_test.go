package monitortask

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/monitor"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// goroutineID returns the id of the calling goroutine (test use only).
func goroutineID() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	id, _ := strconv.ParseInt(string(buf[:bytes.IndexByte(buf, ' ')]), 10, 64)
	return id
}

// fakeDaemon records the failsafes asked for, and on which goroutine.
type fakeDaemon struct {
	mu        sync.Mutex
	failsafed []string
	on        []int64
	called    chan struct{}
}

func (f *fakeDaemon) Counters() *host.Counters  { return host.NewCounters() }
func (f *fakeDaemon) Tasks() []host.TaskInfo    { return nil }
func (f *fakeDaemon) Externals() map[string]int { return nil }
func (f *fakeDaemon) QueueStats(context.Context, bool) ([]transit.QueueStat, error) {
	return nil, nil
}
func (f *fakeDaemon) Out(string, string, string, map[string]any) {}
func (f *fakeDaemon) Failsafe(name string, alert map[string]any) {
	f.mu.Lock()
	f.failsafed = append(f.failsafed, name)
	f.on = append(f.on, goroutineID())
	f.mu.Unlock()
	f.called <- struct{}{}
}
func (f *fakeDaemon) Evaluated() {}

// TestFailsafeAskedOnTheMonitorsGoroutine: the monitor asks the daemon to
// failsafe a task from the evaluation that decided it, on the task's own
// goroutine, and starts no goroutine to do it: the daemon owns the work
// (and joins it before it exits). A goroutine of the monitor's own was
// never joined, and could act on the host after the daemon's exit.
func TestFailsafeAskedOnTheMonitorsGoroutine(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDaemon{called: make(chan struct{}, 1)}
	mt := New(d, st, slog.New(slog.DiscardHandler))
	mc, err := parseMonitorConfig(map[string]any{"buckets": map[string]any{"min_points": -1, "min_bucket_span": -1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mt.apply(mc); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for s := 10; s >= 0; s-- {
		mt.m.Record("Leaky", monitor.MetricFDs, now.Add(-time.Duration(s)*time.Second), 10000) // far past the default failsafe level
	}
	mt.evaluate(nil)
	select {
	case <-d.called:
	case <-time.After(time.Minute):
		t.Fatal("no failsafe asked for a task far past its failsafe level")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.failsafed) != 1 || d.failsafed[0] != "Leaky" {
		t.Fatalf("failsafes asked: %q, want [Leaky]", d.failsafed)
	}
	if me := goroutineID(); d.on[0] != me {
		t.Fatalf("failsafe asked on goroutine %d, want the evaluating goroutine %d", d.on[0], me)
	}
}
