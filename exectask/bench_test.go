package exectask_test

import (
	"testing"

	"github.com/multimodule/multimodule/message"
)

// BenchmarkPyEcho drives the adapter directly: a producer hands b.N
// messages to the Python echo task, one at a time as the host does (each
// waits for its ack), and a counting sink takes the emits.
func BenchmarkPyEcho(b *testing.B) {
	benchEcho(b, "PyEcho")
}

// BenchmarkShellEcho is the same through the sed-based shell task (three
// forks per message: a floor, not a target).
func BenchmarkShellEcho(b *testing.B) {
	benchEcho(b, "ShellEcho")
}

func benchEcho(b *testing.B, name string) {
	r := newRig(b)
	r.keep = false
	xt, tc := startTask(b, r, taskPath(b, examples, name), map[string]any{}, nil)
	msg := message.Message{"host": "box1", "metric": "cpu", "value": 0.25, "ct": int64(1), "tags": []any{"a", "b"}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := xt.Message(tc, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if r.count != b.N {
		b.Fatalf("sink counted %d emits, want %d", r.count, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
