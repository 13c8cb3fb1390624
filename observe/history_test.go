package observe

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func tasksAt(handled map[string]uint64) []Task {
	var out []Task
	for name, n := range handled {
		out = append(out, Task{Task: name, Counters: Counters{Handled: n}})
	}
	return out
}

// TestRateHistory samples the ring with given times and counters: the
// rates are the counters' deltas over the times between samples, the
// ring keeps the last HistoryPoints, a restarted counter counts from
// zero, a reused snapshot is ignored, and a task gone is dropped.
func TestRateHistory(t *testing.T) {
	h := newRateHistory(10 * time.Second)
	t0 := time.Unix(1_000_000, 0)
	if got := h.of("a"); got.StepSeconds != 10 || got.PerSec == nil || len(got.PerSec) != 0 || got.End != 0 {
		t.Fatalf("unknown task: %+v, want an empty history of step 10", got)
	}
	h.sample(t0, tasksAt(map[string]uint64{"a": 100, "b": 0}))
	if got := h.of("a").PerSec; len(got) != 0 {
		t.Fatalf("after the first sample: %v, want no rate yet", got)
	}
	// a: +20 every 10 s (2/s); b: +i every 10 s.
	var want []float64
	for i := 1; i <= 5; i++ {
		h.sample(t0.Add(time.Duration(i)*10*time.Second), tasksAt(map[string]uint64{"a": 100 + 20*uint64(i), "b": uint64(i * (i + 1) / 2)}))
		want = append(want, float64(i)/10)
	}
	if got := h.of("a").PerSec; !slices.Equal(got, []float64{2, 2, 2, 2, 2}) {
		t.Fatalf("a: %v, want five times 2/s", got)
	}
	if got := h.of("b"); !slices.Equal(got.PerSec, want) || got.End != float64(t0.Unix()+50) {
		t.Fatalf("b: %+v, want %v ending at %d", got, want, t0.Unix()+50)
	}
	// A reused snapshot (same time) adds nothing.
	h.sample(t0.Add(50*time.Second), tasksAt(map[string]uint64{"a": 1_000_000, "b": 15}))
	if got := h.of("a").PerSec; len(got) != 5 || got[4] != 2 {
		t.Fatalf("a after a repeated sample: %v", got)
	}
	// Wrap around: 40 more samples, a's rate i/s over a 20 s step; only
	// the last HistoryPoints are kept, oldest first.
	at, n := t0.Add(50*time.Second), uint64(200)
	want = nil
	for i := 1; i <= 40; i++ {
		at = at.Add(20 * time.Second)
		n += uint64(20 * i)
		h.sample(at, tasksAt(map[string]uint64{"a": n, "b": 15}))
		want = append(want, float64(i))
	}
	want = want[len(want)-HistoryPoints:]
	if got := h.of("a").PerSec; !slices.Equal(got, want) {
		t.Fatalf("a after wrapping: %v, want %v", got, want)
	}
	if got := h.of("b").PerSec; len(got) != HistoryPoints || got[HistoryPoints-1] != 0 {
		t.Fatalf("b after wrapping: %v", got)
	}
	// A restarted counter (lower than before) counts what it has.
	at = at.Add(10 * time.Second)
	h.sample(at, tasksAt(map[string]uint64{"a": 30, "b": 15}))
	if got := h.of("a").PerSec; got[HistoryPoints-1] != 3 {
		t.Fatalf("a after its counter restarted: last %v, want 3", got[HistoryPoints-1])
	}
	// b is gone: dropped; back later, it starts afresh.
	at = at.Add(10 * time.Second)
	h.sample(at, tasksAt(map[string]uint64{"a": 30}))
	if _, ok := h.ring["b"]; ok || len(h.ring) != 1 {
		t.Fatalf("b gone but kept: %v", h.ring)
	}
	at = at.Add(10 * time.Second)
	h.sample(at, tasksAt(map[string]uint64{"a": 30, "b": 500}))
	if got := h.of("b").PerSec; len(got) != 0 {
		t.Fatalf("b back: %v, want a fresh empty history", got)
	}
}

// listSource is a Source giving its snapshots in turn, then the last
// one again; drained is closed when it is first asked past the list.
type listSource struct {
	mu      sync.Mutex
	snaps   []Snapshot
	drained chan struct{}
}

func (l *listSource) Snapshot(context.Context) (Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.snaps) == 1 {
		select {
		case <-l.drained:
		default:
			close(l.drained)
		}
		return l.snaps[0], nil
	}
	s := l.snaps[0]
	l.snaps = l.snaps[1:]
	return s, nil
}
func (*listSource) Failsafe(context.Context, string, string) error { return nil }
func (*listSource) Unfailsafe(context.Context, string) error       { return nil }

// TestRateHistoryServed runs the sampler on given snapshots and reads
// the history from /api/v1/tasks; Close stops the sampler.
func TestRateHistoryServed(t *testing.T) {
	t0 := time.Unix(2_000_000, 0)
	src := &listSource{drained: make(chan struct{})}
	for i := range 4 {
		src.snaps = append(src.snaps, Snapshot{Time: t0.Add(time.Duration(i) * time.Second), Tasks: tasksAt(map[string]uint64{"x": uint64(5 * i)})})
	}
	s := New(Options{Source: src, HistoryStep: time.Millisecond, MaxAge: time.Nanosecond})
	t.Cleanup(s.Close)
	s.Start()
	// Once the sampler asks past the list, the fourth sample is in.
	select {
	case <-src.drained:
	case <-time.After(time.Minute):
		t.Fatal("the sampler did not take the snapshots")
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/api/v1/tasks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tasks []struct {
		Task        string `json:"task"`
		RateHistory *struct {
			Step   float64   `json:"step_s"`
			End    float64   `json:"end"`
			PerSec []float64 `json:"per_sec"`
		} `json:"rate_history"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tasks); err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || tasks[0].RateHistory == nil {
		t.Fatalf("tasks: %+v, want x with a rate history", tasks)
	}
	rh := tasks[0].RateHistory
	if rh.Step != 0.001 || rh.End != float64(t0.Unix()+3) || !slices.Equal(rh.PerSec, []float64{5, 5, 5}) {
		t.Fatalf("rate history %+v, want step 0.001, end %d, [5 5 5]", rh, t0.Unix()+3)
	}
}

// stuckSource is a Source whose snapshots wait for their context. Each
// snapshot signals asked without blocking: give asked room for one.
type stuckSource struct{ asked chan struct{} }

func (s stuckSource) Snapshot(ctx context.Context) (Snapshot, error) {
	select {
	case s.asked <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return Snapshot{}, ctx.Err()
}
func (stuckSource) Failsafe(context.Context, string, string) error { return nil }
func (stuckSource) Unfailsafe(context.Context, string) error       { return nil }

// TestCloseStopsSampler: Close ends the sampler even while its snapshot
// hangs, and leaves no goroutine behind.
func TestCloseStopsSampler(t *testing.T) {
	before := goleak.IgnoreCurrent()
	src := stuckSource{asked: make(chan struct{}, 1)} // buffered: the sampler may ask before this test waits
	s := New(Options{Source: src, HistoryStep: time.Hour})
	s.Start()
	select {
	case <-src.asked:
	case <-time.After(time.Minute):
		t.Fatal("the sampler took no snapshot")
	}
	s.Close()
	s.Start() // after Close, starts nothing
	goleak.VerifyNone(t, before)
}
