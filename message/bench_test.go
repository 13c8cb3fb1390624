package message_test

import (
	"testing"

	"github.com/multimodule/multimodule/message"
)

// msg200 is a typical routed message, about 200 bytes as JSON.
var msg200 = []byte(`{"source":"Example1","previous_source":"Router","ct":12345,"outstr":"howdy","host":"web1.example.com","tags":["a","b","c"],"load":0.75,".ipc_transit_meta":{"send_ts":1700000000.123456,"hops":2}}`)

func BenchmarkCopy8Keys(b *testing.B) {
	m := message.Message{
		"source": "Example1", "ct": int64(1), "outstr": "howdy", "host": "web1",
		"load": 0.75, "ok": true, "tags": []any{"a", "b"},
		message.MetaKey: map[string]any{"send_ts": 1.7e9},
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Copy()
	}
}

func BenchmarkUnmarshal200B(b *testing.B) {
	b.SetBytes(int64(len(msg200)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := message.Unmarshal(msg200); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal200B(b *testing.B) {
	m, err := message.Unmarshal(msg200)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg200)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := message.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyRouted copies a message shaped like the bench scenarios'
// (four scalars, ~110-byte string, the transport's metadata): what the
// Router copies for every forward but the last.
func BenchmarkCopyRouted(b *testing.B) {
	m := message.Message{
		"seq": int64(12345), "bench_ts": int64(1795734695018641700), "source": "Producer",
		"pad":           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		message.MetaKey: map[string]any{"send_ts": 1795734695.0186417},
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Copy()
	}
}
