package store

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// smallState is the state of a typical stateful task (the tutorial's
// Example1 plus a little more).
func smallState() map[string]any {
	return map[string]any{
		"ct":       int64(12345),
		"last_msg": map[string]any{"host": "box1", "value": 3.25},
		"seen":     []any{"a", "b", "c"},
	}
}

// BenchmarkSaveState is one save of a small state: the cost of the
// per-second save loop for one task.
func BenchmarkSaveState(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	state := smallState()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.SaveState("Example1", state); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSaveStateManyTasks saves small states of 64 tasks from
// parallel goroutines (GOMAXPROCS × -cpu): the save loop of many tasks at
// once.
func BenchmarkSaveStateManyTasks(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		state := smallState()
		for pb.Next() {
			task := fmt.Sprintf("Task%d", next.Add(1)%64)
			if err := s.SaveState(task, state); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLoadState is one load of a small state (task start-up).
func BenchmarkLoadState(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SaveState("Example1", smallState()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.LoadState("Example1"); err != nil {
			b.Fatal(err)
		}
	}
}
