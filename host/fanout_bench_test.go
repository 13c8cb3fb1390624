package host_test

import (
	benchtasks "github.com/multimodule/multimodule/internal/bench/tasks"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// BenchmarkFanoutPipeline is the fanout scenario of `multimodule bench`
// without the harness: producer task → Router task with the scenario's 10
// routes (4 match, one forward each) → 4 consumer tasks, all hosted by one
// Host. ns/op, cpu-ns/msg and allocs/op are per input message (four
// deliveries), the producer's own message included.
func BenchmarkFanoutPipeline(b *testing.B) {
	env := mmtest.NewEnv(b)
	consumers := []string{"Consumer", "Consumer2", "Consumer3", "Consumer4"}
	sinks := make(map[string]*benchSink, len(consumers))
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "B", Name: "Producer", New: func() (task.Task, error) {
		return &benchProducer{pad: strings.Repeat("x", 110)}, nil
	}})
	for _, c := range consumers {
		s := &benchSink{}
		sinks[c] = s
		reg.MustRegister(task.Definition{Namespace: "B", Name: c, New: func() (task.Task, error) { return s, nil }})
	}
	h, ctx := runHost(b, host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("B")},
		Out: func(ch, tk, text string, d map[string]any) {
			if ch == "error" || ch == "alert" {
				b.Errorf("%s %s %s", ch, tk, text)
			}
		},
	})
	cfg := map[string]any{
		"Router": map[string]any{"routes": benchtasks.FanoutRoutes()},

		"Producer": map[string]any{},
	}
	for _, c := range consumers {
		cfg[c] = map[string]any{}
	}
	if err := h.ConfigureAll(cfg); err != nil {
		b.Fatal(err)
	}
	run := func(n int64) {
		var chs []chan struct{}
		for _, c := range consumers {
			chs = append(chs, sinks[c].expect(n))
		}
		if err := h.Send(ctx, "Producer", message.Message{"n": n}); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(time.Minute)
		for i, ch := range chs {
			select {
			case <-ch:
			case <-timeout:
				s := sinks[consumers[i]]
				b.Fatalf("%s got %d of %d messages", consumers[i], s.seen.Load(), s.want.Load())
			}
		}
	}
	// Warm up until every task has caught up with its (empty) bus queue
	// and delivers in memory.
	deadline := time.Now().Add(30 * time.Second)
	for settled := false; !settled; {
		if time.Now().After(deadline) {
			b.Fatal("tasks not settled within 30s")
		}
		run(1000)
		settled = h.Settled("Router")
		for _, c := range consumers {
			settled = settled && h.Settled(c)
		}
	}
	run(10000)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	run(int64(b.N))
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
