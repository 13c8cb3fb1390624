package message_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
)

func TestCopyIsDeep(t *testing.T) {
	orig := func() message.Message {
		return message.Message{
			"s":      "x",
			"n":      int64(1),
			"m":      map[string]any{"k": "v", "deeper": map[string]any{"k": "v"}},
			"l":      []any{"a", []any{"b"}, map[string]any{"k": "v"}},
			"nested": message.Message{"k": "v"},
		}
	}
	tests := []struct {
		name   string
		mutate func(c message.Message)
	}{
		{"top-level key added", func(c message.Message) { c["new"] = 1 }},
		{"top-level key deleted", func(c message.Message) { delete(c, "s") }},
		{"key of a nested map", func(c message.Message) { c["m"].(map[string]any)["k"] = "changed" }},
		{"key of a map two levels down", func(c message.Message) {
			c["m"].(map[string]any)["deeper"].(map[string]any)["k"] = "changed"
		}},
		{"element of a list", func(c message.Message) { c["l"].([]any)[0] = "changed" }},
		{"element of a list in a list", func(c message.Message) { c["l"].([]any)[1].([]any)[0] = "changed" }},
		{"key of a map in a list", func(c message.Message) { c["l"].([]any)[2].(map[string]any)["k"] = "changed" }},
		{"key of a nested Message", func(c message.Message) { c["nested"].(map[string]any)["k"] = "changed" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := orig()
			c := m.Copy()
			if !reflect.DeepEqual(map[string]any(c), normalized(t, orig())) {
				t.Fatalf("copy: got %#v, want %#v", c, orig())
			}
			tt.mutate(c)
			if want := orig(); !reflect.DeepEqual(m, want) {
				t.Errorf("original after mutating the copy: got %#v, want %#v", m, want)
			}
		})
	}
	t.Run("nil copies to nil", func(t *testing.T) {
		var m message.Message
		if c := m.Copy(); c != nil {
			t.Errorf("got %#v, want nil", c)
		}
	})
	t.Run("nil containers inside copy to empty ones", func(t *testing.T) {
		m := message.Message{"m": map[string]any(nil), "l": []any(nil), "in": []any{map[string]any(nil)}}
		c := m.Copy()
		want := message.Message{"m": map[string]any{}, "l": []any{}, "in": []any{map[string]any{}}}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("got %#v, want %#v", c, want)
		}
		c["m"].(map[string]any)["k"] = "v" // must not panic
	})
	t.Run("an empty list with spare capacity is not shared", func(t *testing.T) {
		l := make([]any, 0, 4)
		m := message.Message{"l": l}
		c := m.Copy()
		_ = append(c["l"].([]any), "appended")
		if got := l[:1][0]; got != nil {
			t.Errorf("original's backing array after appending to the copy: got %#v, want nil", got)
		}
	})
	t.Run("CopyValue of a scalar is the scalar", func(t *testing.T) {
		for _, v := range []any{nil, true, "s", int64(3), 1.5, json.Number("18446744073709551616")} {
			if got := message.CopyValue(v); got != v {
				t.Errorf("CopyValue(%#v): got %#v, want the same value", v, got)
			}
		}
	})
}

// normalized is orig with nested Messages as plain maps, as Copy returns
// them.
func normalized(t *testing.T, m message.Message) map[string]any {
	t.Helper()
	n, err := message.Normalize(m)
	if err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	return n
}

func TestNormalizeAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want message.Message
	}{
		{"canonical values unchanged", map[string]any{"a": nil, "b": true, "c": "s", "d": int64(1), "e": 1.5, "f": []any{}, "g": map[string]any{}},
			message.Message{"a": nil, "b": true, "c": "s", "d": int64(1), "e": 1.5, "f": []any{}, "g": map[string]any{}}},
		{"int kinds become int64", map[string]any{"i": 1, "i8": int8(-8), "i16": int16(16), "i32": int32(-32)},
			message.Message{"i": int64(1), "i8": int64(-8), "i16": int64(16), "i32": int64(-32)}},
		{"uint kinds become int64", map[string]any{"u": uint(1), "u8": uint8(8), "u16": uint16(16), "u32": uint32(32), "u64": uint64(64)},
			message.Message{"u": int64(1), "u8": int64(8), "u16": int64(16), "u32": int64(32), "u64": int64(64)}},
		{"uint64 beyond int64 stays exact", map[string]any{"u": uint64(math.MaxUint64)},
			message.Message{"u": json.Number("18446744073709551615")}},
		{"float32 becomes float64", map[string]any{"f": float32(1.5)}, message.Message{"f": 1.5}},
		{"json.Number converted", map[string]any{"i": json.Number("12"), "f": json.Number("1.5"), "big": json.Number("99999999999999999999")},
			message.Message{"i": int64(12), "f": 1.5, "big": json.Number("99999999999999999999")}},
		{"[]string becomes []any", map[string]any{"l": []string{"a", "b"}}, message.Message{"l": []any{"a", "b"}}},
		{"[]int becomes []any of int64", map[string]any{"l": []int{1, 2}}, message.Message{"l": []any{int64(1), int64(2)}}},
		{"array becomes []any", map[string]any{"l": [2]int{1, 2}}, message.Message{"l": []any{int64(1), int64(2)}}},
		{"nil []string becomes an empty list", map[string]any{"l": []string(nil)}, message.Message{"l": []any{}}},
		{"map[string]int top level", map[string]int{"a": 1}, message.Message{"a": int64(1)}},
		{"map[string]int nested", map[string]any{"m": map[string]int{"a": 1}}, message.Message{"m": map[string]any{"a": int64(1)}}},
		{"Message top level", message.Message{"a": 1}, message.Message{"a": int64(1)}},
		{"Message nested becomes a map", map[string]any{"m": message.Message{"a": 1}}, message.Message{"m": map[string]any{"a": int64(1)}}},
		{"deep conversion", map[string]any{"a": map[string]any{"b": []any{1, []uint8{2}}}},
			message.Message{"a": map[string]any{"b": []any{int64(1), []any{int64(2)}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := message.Normalize(tt.in)
			if err != nil {
				t.Fatalf("Normalize: got error %v, want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
	t.Run("input not modified", func(t *testing.T) {
		in := map[string]any{"a": 1, "l": []any{2, "x"}, "m": map[string]any{"k": 3}}
		if _, err := message.Normalize(in); err != nil {
			t.Fatalf("Normalize: %v", err)
		}
		want := map[string]any{"a": 1, "l": []any{2, "x"}, "m": map[string]any{"k": 3}}
		if !reflect.DeepEqual(in, want) {
			t.Errorf("input after Normalize: got %#v, want %#v", in, want)
		}
	})
	t.Run("NormalizeValue accepts non-maps", func(t *testing.T) {
		got, err := message.NormalizeValue([]int{1})
		if err != nil || !reflect.DeepEqual(got, []any{int64(1)}) {
			t.Errorf("got %#v, %v, want []any{1}, nil", got, err)
		}
	})
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name     string
		in       any
		wantPath string // the quoted path in the error, or "" for top-level rejections
		wantText string
	}{
		{"chan deep in a list", message.Message{"a": map[string]any{"b": []any{1, 2, make(chan int)}}}, `at "a.b[2]"`, "chan int"},
		{"func", map[string]any{"f": func() {}}, `at "f"`, "func()"},
		{"struct", map[string]any{"s": struct{ X int }{1}}, `at "s"`, "struct"},
		{"pointer", map[string]any{"p": new(int)}, `at "p"`, "*int"},
		{"NaN", map[string]any{"x": []any{math.NaN()}}, `at "x[0]"`, "NaN"},
		{"+Inf", map[string]any{"x": math.Inf(1)}, `at "x"`, "+Inf"},
		{"-Inf float32", map[string]any{"x": float32(math.Inf(-1))}, `at "x"`, "-Inf"},
		{"non-string map keys", map[string]any{"m": map[int]string{1: "a"}}, `at "m"`, "map keys must be strings"},
		{"non-string top-level keys", map[int]any{1: "a"}, `at "(top)"`, "map keys must be strings"},
		{"bad json.Number", map[string]any{"n": json.Number("12abc")}, `at "n"`, "not a number"},
		{"too deep", deepMap(600), "nested deeper than", ""},
		{"string top level", "a string", "", "must be a map"},
		{"list top level", []any{1}, "", "must be a map"},
		{"number top level", 1, "", "must be a map"},
		{"null top level", nil, "", "must be a map"},
		{"nil Message", message.Message(nil), "", "must be a map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := message.Normalize(tt.in)
			if err == nil {
				t.Fatalf("Normalize: got %#v, want an error", got)
			}
			if !errors.Is(err, message.ErrNotJSON) {
				t.Errorf("error %q: want it to wrap ErrNotJSON", err)
			}
			for _, want := range []string{tt.wantPath, tt.wantText} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error: got %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

// deepMap returns a message whose key "a" holds depth nested lists.
func deepMap(depth int) map[string]any {
	var v any = []any{}
	for range depth - 1 {
		v = []any{v}
	}
	return map[string]any{"a": v}
}
