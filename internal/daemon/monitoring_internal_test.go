package daemon

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/monitor"
)

// Skipping quiet samples (monitorTask.record) changes no level and no
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
	mt := &monitorTask{cutoff: 300 * time.Second}
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
