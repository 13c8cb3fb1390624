package cluster_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// moveRate and failoverRate are the producer's steady rates while the
// Counter moves and while its box dies, messages a second.
const (
	moveRate     = 500
	failoverRate = 200
)

// TestMeasurePlacement measures cluster placement on three boxes on a
// three-node cluster, every box's stream and the placed tasks' stream
// replicated three times: how long a move of a placed stateful Counter
// takes under load, how long a failover takes when the box running it
// is lost, and the throughput of a producer on box1 through box1's
// Router to the Counter on another box, compared with the Counter on
// box1, placed or not. Each ends with the exactly-once check. It is a
// measurement, not a CI test: it runs only with MM_CLUSTER_MEASURE=1.
//
//	MM_CLUSTER_MEASURE=1 MM_CLUSTER_RUNS=10 MM_CLUSTER_REPORT=/tmp/cluster.json \
//	  go test -count=1 -v -timeout 60m ./test/cluster -run TestMeasurePlacement
func TestMeasurePlacement(t *testing.T) {
	if os.Getenv("MM_CLUSTER_MEASURE") != "1" {
		t.Skip("a measurement, not a CI test: run it with MM_CLUSTER_MEASURE=1 go test -count=1 -v -timeout 60m ./test/cluster -run TestMeasurePlacement (MM_CLUSTER_RUNS: runs of each, default 10; MM_CLUSTER_REPORT: a file for the figures as JSON)")
	}
	runs := envInt(t, "MM_CLUSTER_RUNS", 10)
	var mu sync.Mutex
	report := map[string]any{"runs": runs, "cpus": runtime.NumCPU(), "load_average_before": loadAverage()}
	set := func(k string, v any) { mu.Lock(); report[k] = v; mu.Unlock() }
	t.Run("move", func(t *testing.T) { set("move", measureMove(t, runs)) })
	t.Run("failover", func(t *testing.T) { set("failover", measureFailover(t, runs)) })
	t.Run("throughput", func(t *testing.T) { set("throughput", measureThroughput(t)) })
	report["load_average_after"] = loadAverage()
	t.Logf("load average before %.2f, after %.2f (1 min), %d CPUs", report["load_average_before"].([3]float64)[0], report["load_average_after"].([3]float64)[0], runtime.NumCPU())
	writeReport(t, report)
}

// measureMove: the Counter, placed on box2, counts moveRate messages a
// second from box1; runs times, every box's config is rewritten to place
// it on the next box (box3, box1, box2, …), and the time from the write
// to the first message counted on the new box, and to the first count
// there whose send → count latency is back to what it was before the
// move, is measured.
func measureMove(t *testing.T, runs int) map[string]any {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(runs)*time.Minute+5*time.Minute)
	defer cancel()
	w := newCLWorld(ctx, t, map[string]any{"host": "box2"})
	p := newProducer(t, w)
	stop := p.start(ctx, moveRate)
	defer stop()
	w.rx.waitFor(t, 90*time.Second, "the first 200 messages counted", func([]countMsg) bool { return len(w.rx.first) >= 200 })
	var first, back []time.Duration
	var faults []fault
	targets := []string{"box3", "box1", "box2"}
	for i := range runs {
		to := targets[i%len(targets)]
		limit := w.rx.latencyLimit(p, time.Now(), 2*time.Second)
		pid := w.boxes[to].Daemon.PID()
		t0 := time.Now()
		w.configureAll(placedConfig(map[string]any{"host": to}))
		m := w.rx.firstAfter(t, t0, 60*time.Second, "a count from "+to+" after the move", func(m countMsg) bool { return m.pid == pid })
		b, ok := w.rx.recovered(p, m.at, pid, limit, 120*time.Second)
		if !ok {
			t.Logf("move %d to %s: not back at %d/s within 2m of the first message there", i+1, to, moveRate)
			b = time.Now()
		}
		first, back = append(first, m.at.Sub(t0)), append(back, b.Sub(t0))
		t.Logf("move %d to %s: config written → first message counted there %v, → back at %d/s (send → count within %v) %v",
			i+1, to, m.at.Sub(t0).Round(time.Millisecond), moveRate, limit.Round(time.Millisecond), b.Sub(t0).Round(time.Millisecond))
		faults = append(faults, fault{what: "move to " + to, from: t0, to: b.Add(10 * time.Second)})
		w.settle(p, b)
	}
	stop()
	res := w.checkExactlyOnce(p, true, faults)
	fs, bs := statsOf(first), statsOf(back)
	t.Logf("move: config written → first message counted on the new box: %v", fs)
	t.Logf("move: config written → back at %d/s: %v", moveRate, bs)
	t.Logf("move: exactly once: %+v", res)
	return map[string]any{"rate": moveRate, "first_message": fs, "back_at_rate": bs, "exactly_once": res}
}

// settle waits until a message sent a second after back was counted: the
// pipeline ran steadily for a second before the next move or fault.
func (w *clWorld) settle(p *producer, back time.Time) {
	w.t.Helper()
	w.rx.firstAfter(w.t, back, 60*time.Second, "a message sent a second after the recovery counted", func(m countMsg) bool {
		return p.sentTime(m.seq).After(back.Add(time.Second))
	})
}

// measureFailover: the Counter, placed on any box, counts failoverRate
// messages a second; runs times, the daemon of the box running it and
// the NATS node that daemon is connected to are killed with SIGKILL, and
// the time from the kill to the first message counted by another box,
// and to the pipeline back at rate, is measured; then the box and the
// node are started again.
func measureFailover(t *testing.T, runs int) map[string]any {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(runs)*2*time.Minute+5*time.Minute)
	defer cancel()
	w := newCLWorld(ctx, t, map[string]any{"placement": map[string]any{"any": true}})
	p := newProducer(t, w)
	stop := p.start(ctx, failoverRate)
	defer stop()
	w.rx.waitFor(t, 90*time.Second, "the first 100 messages counted", func([]countMsg) bool { return len(w.rx.first) >= 100 })
	var takeover, back []time.Duration
	var faults []fault
	for i := range runs {
		f, to, b := w.loseBox(p, failoverRate)
		takeover, back = append(takeover, to), append(back, b)
		faults = append(faults, f)
		t.Logf("failover %d: %s: kill → first message counted elsewhere %v, → back at %d/s %v", i+1, f.what, to.Round(time.Millisecond), failoverRate, b.Round(time.Millisecond))
		w.settle(p, f.to.Add(-10*time.Second))
	}
	stop()
	res := w.checkExactlyOnce(p, true, faults)
	ts, bs := statsOf(takeover), statsOf(back)
	t.Logf("failover: kill → first message counted by another box: %v", ts)
	t.Logf("failover: kill → back at %d/s: %v", failoverRate, bs)
	t.Logf("failover: exactly once: %+v", res)
	return map[string]any{"rate": failoverRate, "first_message": ts, "back_at_rate": bs, "exactly_once": res}
}

// measureThroughput: a closed loop (at most throughputWindow messages
// sent and not yet counted, throughputSenders senders) from box1 through
// box1's Router to the Counter, placed on box2, placed on box1, and not
// placed (a task of box1, the single-box default): messages counted a
// second, and the ratios to the last.
func measureThroughput(t *testing.T) map[string]any {
	n := envInt(t, "MM_CLUSTER_THROUGHPUT_MSGS", 5000)
	variants := []struct {
		name    string
		counter map[string]any
		placed  bool
	}{
		{"placed_on_box2", map[string]any{"host": "box2"}, true},
		{"placed_on_box1", map[string]any{"host": "box1"}, true},
		{"not_placed_box1", map[string]any{}, false},
	}
	rates := map[string]float64{}
	out := map[string]any{"messages": n, "window": throughputWindow, "senders": throughputSenders}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			w := newCLWorld(ctx, t, v.counter)
			p := newProducer(t, w)
			// Warm up: the Counter runs where placed and counts.
			w.closedLoop(ctx, p, 200)
			w.rx.waitFor(t, 90*time.Second, "the first 200 messages counted", func([]countMsg) bool { return len(w.rx.first) >= 200 })
			t0 := time.Now()
			w.closedLoop(ctx, p, n)
			acc, _ := p.acceptedSeqs()
			w.rx.waitSeqs(t, acc, 5*time.Minute)
			el := time.Since(t0)
			rate := float64(n) / el.Seconds()
			rates[v.name] = rate
			res := w.checkExactlyOnce(p, v.placed, nil)
			t.Logf("throughput, Counter %s: %d messages in %v: %.0f msgs/s; exactly once: %+v", v.name, n, el.Round(time.Millisecond), rate, res)
			out[v.name] = map[string]any{"msgs_per_s": rate, "seconds": el.Seconds(), "exactly_once": res}
		})
	}
	if base := rates["not_placed_box1"]; base > 0 {
		for _, k := range []string{"placed_on_box2", "placed_on_box1"} {
			out[k+"_ratio"] = rates[k] / base
		}
		t.Logf("throughput ratios to the Counter not placed on box1: placed on box2 (cross-box) %.2f, placed on box1 %.2f", rates["placed_on_box2"]/base, rates["placed_on_box1"]/base)
	}
	return out
}

// The closed loop of measureThroughput.
const (
	throughputWindow  = 1000
	throughputSenders = 16
)

// closedLoop sends n messages with throughputSenders senders, keeping at
// most throughputWindow sent and not yet counted.
func (w *clWorld) closedLoop(ctx context.Context, p *producer, n int) {
	var wg sync.WaitGroup
	var issued atomic.Int64
	for range throughputSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for issued.Add(1) <= int64(n) {
				for {
					ch := w.rx.changedCh()
					if p.sent()-int64(w.rx.distinct()) < throughputWindow {
						break
					}
					select {
					case <-ch:
					case <-ctx.Done():
						return
					}
				}
				p.sendOne(ctx)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		w.t.Fatal(fmt.Errorf("closed loop: %w", ctx.Err()))
	}
}
