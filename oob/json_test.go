package oob_test

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
)

// deep returns a map nested n levels deep.
func deep(n int) map[string]any {
	m := map[string]any{"leaf": int64(1)}
	for range n {
		m = map[string]any{"d": m}
	}
	return m
}

// TestJSONLinesAreTheMessage: the JSON line a file or pipe receives is
// exactly message.Marshal(r.Message()), whatever the record holds.
func TestJSONLinesAreTheMessage(t *testing.T) {
	tests := []struct {
		name string
		r    oob.Record
	}{
		{"plain", oob.Record{Channel: "log", Text: "hello", Task: "Foo", PID: 12, Time: when}},
		{"string escapes", oob.Record{Channel: "error", Text: "q\" b\\ \n\r\t\b\f \x00\x1f \x7f <a>&amp; é 日本 \u2028\u2029 bad:\xff\xfe end", PID: 1, Time: when}},
		{"unicode channel and task", oob.Record{Channel: "kanal_ä", Task: "Tâche", PID: 1, Time: when}},
		{"numbers", oob.Record{Channel: "alert", PID: 1, Time: when, Details: map[string]any{
			"zero": 0.0, "neg": -0.5, "small": 1e-7, "tiny": -2.5e-300, "big": 1e21, "bigger": 1.5e300, "frac": 123456789.125,
			"int": int64(math.MinInt64), "goint": 7, "huge": json.Number("123456789012345678901234567890"),
			"nan": math.NaN(), "inf": math.Inf(-1), "u64": uint64(math.MaxUint64), "f32": float32(0.1),
		}}},
		{"nested", oob.Record{Channel: "alert", PID: 1, Time: when, Details: map[string]any{
			"alert": map[string]any{"bucket": "Foo:local.cpu.one_core", "levels": []any{"warn", int64(2), nil, true, map[string]any{}}},
			"msg":   message.Message{"a": []any{}},
		}}},
		{"values JSON cannot carry", oob.Record{Channel: "error", PID: 1, Time: when, Details: map[string]any{
			"err": errors.New("boom \"quoted\""), "d": 90 * time.Second, "t": when, "ch": make(chan int),
			"strs": []string{"a", "b"}, "ints": map[string]int{"x": 1}, "list": []any{errors.New("inner")},
		}}},
		{"too deep", oob.Record{Channel: "log", PID: 1, Time: when, Details: deep(80)}},
		{"time with a zone and no fraction", oob.Record{Channel: "log", PID: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -7200))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out lockedBuffer
			d := oob.New(oob.Options{Handling: oob.Handling{tt.r.Channel: "1"}, Stdout: &out, Stderr: io.Discard, Terminal: notTerminal})
			t.Cleanup(func() { d.Close() })
			d.Handle(t.Context(), tt.r)
			want, err := message.Marshal(tt.r.Message())
			if err != nil {
				t.Fatalf("Marshal(Message()): %v", err)
			}
			got := out.String()
			if got != string(want)+"\n" {
				t.Errorf("JSON line:\n got %s\nwant %s", strings.TrimSpace(got), want)
			}
			if _, err := message.Unmarshal([]byte(got)); err != nil {
				t.Errorf("line does not decode: %v", err)
			}
		})
	}
}
