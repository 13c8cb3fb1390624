package message_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
)

func TestCopier(t *testing.T) {
	tests := []struct {
		name string
		msg  message.Message
	}{
		{"scalars only", message.Message{"a": "x", "n": int64(1)}},
		{"bench message", message.Message{"seq": int64(1), "source": "P", "pad": strings.Repeat("x", 110),
			message.MetaKey: map[string]any{"send_ts": 1.5}}},
		{"nested maps and lists", message.Message{"m": map[string]any{"k": map[string]any{"d": "v"}}, "l": []any{"a", []any{"b"}},
			"leaf": map[string]any{"k": "v"}}},
		{"nested Message", message.Message{"nested": message.Message{"k": "v"}, "deep": message.Message{"k": []any{"v"}}}},
		{"nil map and list inside", message.Message{"m": map[string]any(nil), "l": []any(nil), "x": "y"}},
		{"more containers than planned", message.Message{"a": []any{1}, "b": []any{2}, "c": map[string]any{}, "d": map[string]any{"x": 1}, "e": []any{}}},
		{"8 keys with a container", message.Message{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": map[string]any{"i": 8}}},
		{"8 keys without containers", message.Message{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8}},
		{"empty", message.Message{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.msg.Copy() // Copy's result is the reference
			var c message.Copier
			c.Reset(tt.msg)
			var copies []message.Message
			for range 3 {
				got := c.Copy()
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("copy %d: got %#v, want %#v", len(copies), got, want)
				}
				noShared(t, map[string]any(tt.msg), map[string]any(got), "")
				for _, other := range copies {
					noShared(t, map[string]any(other), map[string]any(got), "")
				}
				copies = append(copies, got)
			}
		})
	}
	t.Run("zero Copier and nil message copy to nil", func(t *testing.T) {
		var c message.Copier
		if got := c.Copy(); got != nil {
			t.Errorf("zero Copier: got %#v, want nil", got)
		}
		c.Reset(nil)
		if got := c.Copy(); got != nil {
			t.Errorf("nil message: got %#v, want nil", got)
		}
	})
	t.Run("Reset after a change", func(t *testing.T) {
		m := message.Message{"a": "x", "meta": map[string]any{"k": "v"}}
		var c message.Copier
		c.Reset(m)
		_ = c.Copy()
		m["l"] = []any{map[string]any{"k": "v"}} // a new container
		m["meta"] = map[string]any{"k2": []any{"v"}}
		c.Reset(m)
		got := c.Copy()
		if !reflect.DeepEqual(got, m.Copy()) {
			t.Fatalf("got %#v, want %#v", got, m.Copy())
		}
		noShared(t, map[string]any(m), map[string]any(got), "")
	})
}

// TestCopierAllocs: a Copier allocates what Copy allocates, nothing more.
func TestCopierAllocs(t *testing.T) {
	m := message.Message{"seq": int64(1), "source": "P", "pad": "xxxx", message.MetaKey: map[string]any{"send_ts": 1.5}}
	want := testing.AllocsPerRun(100, func() { _ = m.Copy() })
	got := testing.AllocsPerRun(100, func() {
		var c message.Copier
		c.Reset(m)
		_ = c.Copy()
		_ = c.Copy()
	})
	if got != 2*want {
		t.Errorf("allocations for two copies: got %v, want %v", got, 2*want)
	}
}
