package exectask_test

import (
	"testing"

	"github.com/multimodule/multimodule/message"
)

// BenchmarkPyEcho drives the adapter directly: a producer hands b.N
// messages to the Python echo task, one at a time (each waits for its
// ack: what a task gets from the bus, or from a mailbox holding one
// message), and a counting sink takes the emits.
func BenchmarkPyEcho(b *testing.B) {
	benchEcho(b, "PyEcho", 1)
}

// BenchmarkPyEchoPipelined is the same with the messages announced in
// runs of 64, as the host does with a mailbox holding a burst: protocol 2
// has up to the window in flight.
func BenchmarkPyEchoPipelined(b *testing.B) {
	benchEcho(b, "PyEcho", 64)
}

// BenchmarkShellEcho is the same through the sed-based shell task (three
// forks per message: a floor, not a target).
func BenchmarkShellEcho(b *testing.B) {
	benchEcho(b, "ShellEcho", 1)
}

// benchEcho hands b.N messages to task name, announced (Ahead) in runs of
// batch when batch > 1.
func benchEcho(b *testing.B, name string, batch int) {
	r := newRig(b)
	r.keep = false
	xt, tc := startTask(b, r, taskPath(b, examples, name), map[string]any{}, nil)
	msg := message.Message{"host": "box1", "metric": "cpu", "value": 0.25, "ct": int64(1), "tags": []any{"a", "b"}}
	b.ReportAllocs()
	b.ResetTimer()
	// Distinct maps: the adapter knows an announced message by identity.
	msgs := make([]message.Message, max(batch, 1))
	for i := range msgs {
		msgs[i] = msg.Copy()
	}
	for i := 0; i < b.N; {
		run := msgs[:min(len(msgs), b.N-i)]
		if len(run) > 1 {
			xt.Ahead(tc, run)
		}
		for _, m := range run {
			if err := xt.Message(tc, m); err != nil {
				b.Fatal(err)
			}
		}
		i += len(run)
	}
	b.StopTimer()
	if r.count != b.N {
		b.Fatalf("sink counted %d emits, want %d", r.count, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
