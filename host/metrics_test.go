package host_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// TestCountersMoved: Moved names exactly the tasks whose counters moved
// since it last looked — a counter counted, a new counter (even at 0), or
// a task whose counters were cleared and started again — with all their
// values.
func TestCountersMoved(t *testing.T) {
	c := host.NewCounters()
	marks := map[string]host.CounterMark{}
	moved := func() string {
		t.Helper()
		return fmt.Sprint(c.Moved(marks))
	}
	c.Add("A", "passed", 2)
	c.Add("B", "passed", 1)
	if got, want := moved(), "map[A:map[passed:2] B:map[passed:1]]"; got != want {
		t.Errorf("first look: got %s, want %s", got, want)
	}
	if got := moved(); got != "map[]" {
		t.Errorf("nothing counted: got %s, want none", got)
	}
	c.Add("B", "passed", 1)
	if got, want := moved(), "map[B:map[passed:2]]"; got != want {
		t.Errorf("B counted: got %s, want %s", got, want)
	}
	c.Counter("A", "failed") // a new counter, at 0
	if got, want := moved(), "map[A:map[failed:0 passed:2]]"; got != want {
		t.Errorf("A has a new counter: got %s, want %s", got, want)
	}
	// Cleared and counting again to the same figures.
	c.Clear("B")
	c.Add("B", "passed", 2)
	if got, want := moved(), "map[B:map[passed:2]]"; got != want {
		t.Errorf("B cleared and counted again: got %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(c.Task("A")), "map[failed:0 passed:2]"; got != want {
		t.Errorf("Task(A): got %s, want %s", got, want)
	}
	if got := c.Task("None"); len(got) != 0 {
		t.Errorf("Task(None): got %v, want empty", got)
	}
}

// TestHandlerBucketBounds: a duration goes to the first bucket whose bound
// it does not exceed; past the last bound, to the overflow.
func TestHandlerBucketBounds(t *testing.T) {
	last := len(host.HandlerBuckets)
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{10 * time.Microsecond, 0},
		{10*time.Microsecond + 1, 1},
		{2500 * time.Microsecond, 7},
		{3 * time.Millisecond, 8},
		{10 * time.Second, last - 1},
		{10*time.Second + 1, last},
		{time.Hour, last},
	} {
		if got := host.HandlerBucket(c.d); got != c.want {
			t.Errorf("bucket of %v: got %d, want %d", c.d, got, c.want)
		}
	}
	for i := 1; i < last; i++ {
		if host.HandlerBuckets[i] <= host.HandlerBuckets[i-1] {
			t.Errorf("bounds not ascending at %d: %v", i, host.HandlerBuckets)
		}
	}
}

// TestHandlerLatencyHistogram: a task's handled messages are counted in
// its handler latency buckets, each at or above the bucket of the time
// its handler at least took.
func TestHandlerLatencyHistogram(t *testing.T) {
	f := newFixture(t, newRecorder(), nil)
	if err := f.h.Configure("Probe", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	const n, sleep = 3, 3 * time.Millisecond // 3 ms: past the 2.5 ms bound
	for range n {
		if err := f.h.Send(context.Background(), "Probe", message.Message{"sleep_ms": 3}); err != nil {
			t.Fatal(err)
		}
	}
	f.waitMsgs(t, "Probe", n)
	var total, slow uint64
	mmtest.Eventually(t, 10*time.Second, func() error {
		cs := f.h.Counters().Task("Probe")
		total, slow = cs[host.MetricHandlerOverflow], cs[host.MetricHandlerOverflow]
		for i, metric := range host.HandlerBucketMetrics {
			v, ok := cs[metric]
			if !ok {
				return fmt.Errorf("no counter %s: %v", metric, cs)
			}
			total += v
			if host.HandlerBuckets[i] >= sleep {
				slow += v
			}
		}
		if total < n {
			return fmt.Errorf("%d messages in the buckets, want %d: %v", total, n, cs)
		}
		return nil
	})
	if slow < n {
		t.Errorf("%d messages at or above the %v bucket, want %d (of %d counted)", slow, sleep, n, total)
	}
	if got := f.h.Counters().Get("Probe", host.MetricHandlerNanos); got < uint64(n*sleep) {
		t.Errorf("handler time %v, want at least %v", time.Duration(got), n*sleep)
	}
}
