package message

import (
	"encoding/json"
	"testing"
)

func TestEqual(t *testing.T) {
	cases := []struct {
		name string
		a, b any
		want bool
	}{
		{"int and float", int64(1), 1.0, true},
		{"json.Number", json.Number("3"), int64(3), true},
		{"number is not a string", int64(1), "1", false},
		{"nested maps", map[string]any{"a": []any{int64(1), map[string]any{"b": 2.0}}}, Message{"a": []any{1.0, map[string]any{"b": int64(2)}}}, true},
		{"missing key", map[string]any{"a": nil}, map[string]any{"b": nil}, false},
		{"list length", []any{int64(1)}, []any{int64(1), int64(2)}, false},
		{"bool", true, true, true},
		{"null vs false", nil, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Equal(c.a, c.b); got != c.want {
				t.Fatalf("Equal(%#v, %#v): got %v, want %v", c.a, c.b, got, c.want)
			}
		})
	}
}

func TestSame(t *testing.T) {
	a := Message{"x": 1}
	b := a
	c := Message{"x": 1}
	if !Same(a, b) {
		t.Error("a message and itself: not the same")
	}
	if Same(a, c) {
		t.Error("two messages with equal contents: the same")
	}
	if !Same(nil, nil) || Same(a, nil) {
		t.Error("nil messages: wrong answer")
	}
}
