package transform_test

import (
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// benchMessage is a small, typical routed message.
func benchMessage() message.Message {
	return message.Message{
		"source": "Example1",
		"host":   "web1",
		"ct":     int64(42),
		"outstr": "howdy",
	}
}

func BenchmarkApplyLiteral(b *testing.B) {
	tr := transform.MustCompile(map[string]any{"seen_by": "router", "stage": 2})
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if err := tr.Apply(m, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplySpecial(b *testing.B) {
	tr := transform.MustCompile(map[string]any{"hostname": ` specials/"host-" + message.host`})
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if err := tr.Apply(m, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplySpecialLoop(b *testing.B) {
	tr := transform.MustCompile(map[string]any{"hostnames": ` specials/map(message.hosts, "host-" + #)`})
	m := benchMessage()
	m["hosts"] = []any{"a", "b", "c", "d", "e", "f", "g", "h"}
	b.ReportAllocs()
	for b.Loop() {
		if err := tr.Apply(m, map[string]string{"x": "y"}); err != nil {
			b.Fatal(err)
		}
	}
}
