package host_test

import (
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// benchProducer emits msg["n"] messages of about 200 bytes (seq, a
// timestamp and padding, as the inproc scenario of `multimodule bench`)
// from one handler call.
type benchProducer struct{ pad string }

func (p *benchProducer) Message(tc *task.Context, msg message.Message) error {
	n, _ := message.Int(msg["n"])
	for i := range n {
		if err := tc.Emit(message.Message{"seq": i, "bench_ts": time.Now().UnixNano(), "pad": p.pad}); err != nil {
			return err
		}
	}
	return nil
}

// benchSink counts messages and closes done when it has seen want.
type benchSink struct {
	seen atomic.Int64
	want atomic.Int64
	done atomic.Pointer[chan struct{}]
}

func (s *benchSink) Message(tc *task.Context, msg message.Message) error {
	if s.seen.Add(1) == s.want.Load() {
		close(*s.done.Load())
	}
	return nil
}

// expect makes the sink close (and return) a channel after n more messages.
func (s *benchSink) expect(n int64) chan struct{} {
	ch := make(chan struct{})
	s.done.Store(&ch)
	s.want.Store(s.seen.Load() + n)
	return ch
}

// inlineBenchSink is benchSink as a task.Inliner, as the consumer of
// the inproc scenario.
type inlineBenchSink struct{ *benchSink }

func (inlineBenchSink) HandlesInline() bool { return true }

// BenchmarkPipeline is the in-process hot path of the inproc scenario:
// producer task → Router task (one route) → consumer task, all hosted by
// one Host; ns/op and allocs/op are per message through all three (allocs
// counted process-wide, the producer's own message included).
func BenchmarkPipeline(b *testing.B) {
	b.Run("mailbox", func(b *testing.B) { benchPipeline(b, false) })
	b.Run("inline", func(b *testing.B) { benchPipeline(b, true) })
}

// benchPipeline is BenchmarkPipeline with a consumer that is a
// task.Inliner (inline) or not.
func benchPipeline(b *testing.B, inline bool) {
	env := mmtest.NewEnv(b)
	sink := &benchSink{}
	var consumer task.Task = sink
	if inline {
		consumer = inlineBenchSink{sink}
	}
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "B", Name: "Producer", New: func() (task.Task, error) {
		return &benchProducer{pad: strings.Repeat("x", 110)}, nil
	}})
	reg.MustRegister(task.Definition{Namespace: "B", Name: "Consumer", New: func() (task.Task, error) { return consumer, nil }})
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
	if err := h.ConfigureAll(map[string]any{
		"Router":   map[string]any{"routes": []any{map[string]any{"match": map[string]any{"source": "Producer"}, "forwards": []any{map[string]any{"qname": "Consumer"}}}}},
		"Producer": map[string]any{},
		"Consumer": map[string]any{},
	}); err != nil {
		b.Fatal(err)
	}
	run := func(n int64) {
		ch := sink.expect(n)
		if err := h.Send(ctx, "Producer", message.Message{"n": n}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(time.Minute):
			b.Fatalf("the consumer got %d of %d messages", sink.seen.Load(), sink.want.Load())
		}
	}
	// Warm up until every task has caught up with its (empty) bus queue
	// and delivers in memory.
	deadline := time.Now().Add(30 * time.Second)
	for !h.Settled("Router") || !h.Settled("Consumer") {
		if time.Now().After(deadline) {
			b.Fatal("tasks not settled within 30s")
		}
		run(1000)
	}
	run(10000)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b)
	run(int64(b.N))
	// CPU time per message tells more than ns/op on a shared machine:
	// other processes stretch the wall time, not the CPU work.
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
