package monitortask

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/monitor"
)

// Skipping quiet samples (Task.record) changes no level and no
// alert: a monitor fed through record and one fed every sample, over
// idle stretches longer than the cutoff, bursts, and a steady non-zero
// gauge, reach the same levels at every evaluation and raise the same
// alerts.
func TestQuietSamplesChangeNoAlert(t *testing.T) {
	th, err := monitor.ParseThresholds(map[string]any{
		host.MetricPassedMessages:   map[string]any{"levels": []any{"severe > 3000", "warn > 200"}},
		MetricMailboxDepth:          map[string]any{"levels": []any{"warn > 0.5"}},
		monitor.MetricQueueFullness: map[string]any{"levels": []any{"warn > 0.01"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var alerts [2][]string
	newMon := func(i int) *monitor.Monitor {
		return monitor.New(monitor.Options{Thresholds: th, OnAlert: func(a monitor.Alert) {
			alerts[i] = append(alerts[i], fmt.Sprintf("%v %s %s %s %.6g", a.Time.Unix(), a.Bucket, a.Window, a.Level, a.Value))
		}})
	}
	full, skip := newMon(0), newMon(1)
	mt := &Task{cutoff: 300 * time.Second}
	base := time.Unix(1_800_000_000, 0)
	var total float64
	for s := 0; s < 2400; s++ {
		now := base.Add(time.Duration(s) * time.Second)
		switch {
		case s >= 400 && s < 420:
			total += 100
		case s >= 1200 && s < 1210:
			total += 50
		case s == 1700:
			total++
		}
		depth := 0.0
		if (s >= 600 && s < 610) || (s >= 1000 && s < 1400) {
			depth = 3
		}
		fullness := 0.0
		if s >= 450 && s < 455 {
			fullness = 0.5
		}
		samples := []struct {
			name, metric string
			idx          int
			v            float64
			counter      bool
		}{
			{"A", host.MetricPassedMessages, quietPassed, total, true},
			{"Idle", host.MetricPassedMessages, quietPassed, 0, true},
			{"A", MetricMailboxDepth, quietMailbox, depth, false},
			{"Q", monitor.MetricQueueFullness, quietFullness, fullness, false},
		}
		mt.round(now)
		for _, x := range samples {
			full.Record(x.name, x.metric, now, x.v)
			mt.record(skip, x.name, x.metric, x.idx, now, x.v, x.counter)
		}
		if s%5 == 0 {
			full.Evaluate(now)
			skip.Evaluate(now)
			for _, name := range []string{"A", "Idle", "Q"} {
				if f, k := full.Levels(name), skip.Levels(name); !sameLevels(f, k) {
					t.Fatalf("second %d, %s: levels %v sampling every second, %v skipping", s, name, f, k)
				}
			}
		}
	}
	if !slices.Equal(alerts[0], alerts[1]) {
		t.Fatalf("alerts differ:\nevery second: %q\nskipping:     %q", alerts[0], alerts[1])
	}
	if len(alerts[0]) < 6 {
		t.Fatalf("the series raised only %q: it tests too little", alerts[0])
	}
}

// sameLevels compares two Levels maps, a missing bucket being "ok".
func sameLevels(a, b map[string]string) bool {
	for k, v := range a {
		if v != "ok" && b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if v != "ok" && a[k] != v {
			return false
		}
	}
	return true
}

// Skipping settled tasks (recordCounters: none of the task's counters
// moved, none being recorded) changes no level and no alert either: two
// monitors fed the same counters, one processing every task every round,
// reach the same levels at every evaluation and raise the same alerts —
// with tasks idle from the start, bursts of messages and admin events
// more than the cutoff apart, and a task whose counters appear late. The
// skipping monitor is fed as sample feeds it: only the tasks whose
// counters moved (host.Counters.Moved).
func TestSettledTasksSkippedChangeNoAlert(t *testing.T) {
	th, err := monitor.ParseThresholds(map[string]any{
		host.MetricPassedMessages:     map[string]any{"levels": []any{"severe > 3000", "warn > 200"}},
		host.MetricTaskMessageFailure: map[string]any{"levels": []any{"severe > 0.5", "warn > 0.01"}},
		MetricHandlerSeconds:          map[string]any{"levels": []any{"warn > 0.5"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var alerts [2][]string
	var mons [2]*monitor.Monitor
	var tasks [2]*Task
	for i := range 2 {
		mons[i] = monitor.New(monitor.Options{Thresholds: th, OnAlert: func(a monitor.Alert) {
			alerts[i] = append(alerts[i], fmt.Sprintf("%v %s %s %s %.6g", a.Time.Unix(), a.Bucket, a.Window, a.Level, a.Value))
		}})
		tasks[i] = &Task{cutoff: 300 * time.Second, everyTask: i == 0}
	}
	hc := host.NewCounters()
	tasks[1].marks = map[string]host.CounterMark{}
	base := time.Unix(1_800_000_000, 0)
	var passed, failed, nanos uint64
	skipped := 0
	for s := 0; s < 2400; s++ {
		now := base.Add(time.Duration(s) * time.Second)
		switch {
		case s >= 400 && s < 420:
			passed += 100
			nanos += 100 * uint64(time.Millisecond)
		case s >= 1200 && s < 1210:
			passed += 50
			nanos += 50 * uint64(time.Second)
			failed++
		case s == 1700:
			failed += 3
		}
		counters := func() map[string]map[string]uint64 {
			c := map[string]map[string]uint64{
				"A": {
					host.MetricPassedMessages:     passed,
					host.MetricEmitMessages:       passed / 2,
					host.MetricHandlerNanos:       nanos,
					host.MetricTaskMessageFailure: failed,
				},
				"Idle": {host.MetricPassedMessages: 0, host.MetricEmitMessages: 0, host.MetricHandlerNanos: 0},
			}
			if s >= 900 {
				c["Late"] = map[string]uint64{host.MetricPassedMessages: uint64(s-900) / 100, host.MetricTaskMessageFailure: uint64(s-900) / 400}
			}
			return c
		}
		for task, cs := range counters() {
			for metric, v := range cs {
				hc.Add(task, metric, v-hc.Get(task, metric))
			}
		}
		moved := hc.Moved(tasks[1].marks)
		if moved == nil {
			moved = map[string]map[string]uint64{}
		}
		tasks[0].round(now)
		tasks[0].recordCounters(mons[0], now, counters())
		tasks[1].round(now)
		tasks[1].recordCounters(mons[1], now, moved)
		if u, ok := tasks[1].settled["A"]; ok && now.After(u) {
			skipped++
		}
		if s%5 == 0 {
			for i := range 2 {
				mons[i].Evaluate(now)
			}
			for _, name := range []string{"A", "Idle", "Late"} {
				if f, k := mons[0].Levels(name), mons[1].Levels(name); !sameLevels(f, k) {
					t.Fatalf("second %d, %s: levels %v processing every task, %v skipping settled ones", s, name, f, k)
				}
			}
		}
	}
	if !slices.Equal(alerts[0], alerts[1]) {
		t.Fatalf("alerts differ:\nevery task: %q\nskipping:   %q", alerts[0], alerts[1])
	}
	if len(alerts[0]) < 6 || skipped < 1000 {
		t.Fatalf("the series raised only %q and skipped A in %d rounds: it tests too little", alerts[0], skipped)
	}
}

// TestHandlerBucketsNotMonitored: the handler latency histogram's bucket
// counters are for /metrics; the monitor records none of them as events.
func TestHandlerBucketsNotMonitored(t *testing.T) {
	m := monitor.New(monitor.Options{})
	mt := &Task{cutoff: 300 * time.Second, everyTask: true}
	base := time.Unix(1_800_000_000, 0)
	for s := range 3 {
		now := base.Add(time.Duration(s) * time.Second)
		cs := map[string]uint64{host.MetricPassedMessages: uint64(s), host.MetricHandlerOverflow: uint64(s)}
		for _, metric := range host.HandlerBucketMetrics {
			cs[metric] = uint64(s)
		}
		mt.round(now)
		mt.recordCounters(m, now, map[string]map[string]uint64{"A": cs})
	}
	for _, b := range m.Buckets() {
		if strings.Contains(b, host.MetricHandlerBucketPrefix) {
			t.Errorf("the monitor records %s", b)
		}
	}
	if len(m.Buckets()) == 0 {
		t.Fatal("the monitor recorded nothing: the test tests too little")
	}
}
