package monitor

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// The benchmark load: 50 processes × 8 metrics, one sample a second.
const (
	benchProcs = 50
	benchSecs  = 300 // history held: the cutoff age at one sample a second
)

var benchMetrics = []string{
	MetricFDs, MetricThreads, MetricMemory, MetricCPU,
	MetricDiskRead, MetricDiskWrite, MetricPassedMessages, MetricEmitMessages,
}

func benchTasks() []string {
	tasks := make([]string, benchProcs)
	for i := range tasks {
		tasks[i] = fmt.Sprintf("Task%02d", i)
	}
	return tasks
}

// recordSecond records one second's samples of every process; values stay
// below every threshold, as on a healthy box.
func recordSecond(m *Monitor, tasks []string, s int) {
	now := at(float64(s))
	for _, task := range tasks {
		for _, metric := range benchMetrics {
			v := 0.05 // below every threshold
			if metric == MetricPassedMessages || metric == MetricEmitMessages {
				v = float64(10 * s) // cumulative totals
			}
			m.Record(task, metric, now, v)
		}
	}
}

// fullMonitor returns a Monitor whose 400 buckets each hold a full
// cutoff age of history.
func fullMonitor(b *testing.B) (*Monitor, []string) {
	b.Helper()
	m := New(Options{OnAlert: func(a Alert) { b.Fatalf("unexpected alert %s", a.Summary) }})
	tasks := benchTasks()
	for s := 0; s < benchSecs; s++ {
		recordSecond(m, tasks, s)
	}
	return m, tasks
}

// BenchmarkRecord: the cost of one sample into a full bucket.
func BenchmarkRecord(b *testing.B) {
	m, tasks := fullMonitor(b)
	s := benchSecs
	i := 0
	for b.Loop() {
		task, metric := tasks[i/len(benchMetrics)], benchMetrics[i%len(benchMetrics)]
		m.Record(task, metric, at(float64(s)), 1)
		if i++; i == len(tasks)*len(benchMetrics) {
			i, s = 0, s+1
		}
	}
}

// BenchmarkEvaluate: one evaluation of 400 full buckets over both windows.
func BenchmarkEvaluate(b *testing.B) {
	m, _ := fullMonitor(b)
	now := at(benchSecs)
	for b.Loop() {
		m.Evaluate(now)
	}
}

// BenchmarkMonitorSecond: one second of production work for 50 processes
// (400 samples, and a fifth of an evaluation); sampling /proc excluded,
// see BenchmarkSamplerSample.
func BenchmarkMonitorSecond(b *testing.B) {
	m, tasks := fullMonitor(b)
	s := benchSecs
	for b.Loop() {
		recordSecond(m, tasks, s)
		if s%5 == 0 {
			m.Evaluate(at(float64(s)))
		}
		s++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e9*100, "%core")
}

// BenchmarkSamplerSample: reading one process' usage from /proc.
func BenchmarkSamplerSample(b *testing.B) {
	sm, err := NewSampler()
	if err != nil {
		b.Fatal(err)
	}
	pid := os.Getpid()
	now := time.Now()
	for b.Loop() {
		now = now.Add(time.Second)
		if _, _, err := sm.Sample(pid, now); err != nil {
			b.Fatal(err)
		}
	}
}
