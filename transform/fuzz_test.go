package transform_test

import (
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// FuzzTransform feeds arbitrary JSON transforms and messages through
// Compile and Apply: neither may panic, and a successful Apply must set
// every literal key to the transform's value.
func FuzzTransform(f *testing.F) {
	seeds := []struct{ tr, msg string }{
		{`{"x": "y"}`, `{"a": "b"}`},
		{`{"c": {"d": [1, 2.5, null, true]}}`, `{"c": {"e": 1}}`},
		{`{"x": " specials/message.a"}`, `{"a": "b"}`},
		{`{"x": " specials/\"host-\" + message.host"}`, `{"host": "web1"}`},
		{`{"n": " specials/len(message.l)"}`, `{"l": [1, 2, 3]}`},
		{`{"x": " specials/message.a.b.c + 1", "y": "kept"}`, `{"a": "b"}`},
		{`{"x": " specials/map(message.l, # * 2)"}`, `{"l": [1, 2, 3]}`},
		{`{"x": " specials/reduce(1..60, [#acc, #acc], 1)"}`, `{}`},
		{`{"x": " specials/toJSON(message)", "y": " specials/fromJSON(message.j)"}`, `{"j": "{\"a\": [1]}"}`},
		{`{"x": " specials/groupBy(message.l, # % 2)"}`, `{"l": [1, 2]}`},
		{`{"x": " special/foo/"}`, `{}`},
		{`{"x": " specials/"}`, `{}`},
		{`{"x": " specials/1..1000000000"}`, `{}`},
		{`{"x": " specials/$env"}`, `{}`},
		{`{"x": " specials/captures"}`, `{"a": 9007199254740993}`},
	}
	for _, s := range seeds {
		f.Add(s.tr, s.msg)
	}
	f.Fuzz(func(t *testing.T, trJSON, msgJSON string) {
		tr, err := message.Unmarshal([]byte(trJSON))
		if err != nil {
			return
		}
		m, err := message.Unmarshal([]byte(msgJSON))
		if err != nil {
			return
		}
		c, err := transform.Compile(tr)
		if err != nil {
			return
		}
		_ = c.Apply(m, map[string]string{"k": "v"})
		for k, v := range tr {
			if s, ok := v.(string); ok && len(s) >= len(transform.SpecialPrefix) && s[:len(transform.SpecialPrefix)] == transform.SpecialPrefix {
				continue
			}
			if !jsonEqual(m[k], v) {
				t.Errorf("literal key %q: got %#v, want %#v", k, m[k], v)
			}
		}
		if _, err := message.Marshal(m); err != nil {
			t.Errorf("transformed message is not JSON: %v", err)
		}
	})
}
