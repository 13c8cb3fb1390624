package message_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
)

func TestUnmarshalNumbers(t *testing.T) {
	tests := []struct {
		name string
		json string
		want any
	}{
		{"small integer", `{"n": 42}`, int64(42)},
		{"negative integer", `{"n": -7}`, int64(-7)},
		{"2^53 + 1 exactly", `{"n": 9007199254740993}`, int64(9007199254740993)},
		{"int64 max", `{"n": 9223372036854775807}`, int64(9223372036854775807)},
		{"int64 min", `{"n": -9223372036854775808}`, int64(-9223372036854775808)},
		{"int64 max + 1 as json.Number", `{"n": 9223372036854775808}`, json.Number("9223372036854775808")},
		{"huge integer as json.Number", `{"n": 123456789012345678901234567890}`, json.Number("123456789012345678901234567890")},
		{"float", `{"n": 1.5}`, 1.5},
		{"float with integral value stays float", `{"n": 1.0}`, 1.0},
		{"exponent is a float", `{"n": 1e3}`, 1000.0},
		{"negative exponent", `{"n": 25E-1}`, 2.5},
		{"nested numbers converted", `{"n": {"l": [1, 2.5]}}`, map[string]any{"l": []any{int64(1), 2.5}}},
		{"negative zero integer", `{"n": -0}`, int64(0)},
		{"18 digits", `{"n": -999999999999999999}`, int64(-999999999999999999)},
		{"19 digits", `{"n": 1000000000000000000}`, int64(1000000000000000000)},
		{"numbers in lists in lists", `{"n": [[1, -2], [{"x": 30000000000000000000}], 1E2]}`,
			[]any{[]any{int64(1), int64(-2)}, []any{map[string]any{"x": json.Number("30000000000000000000")}}, 100.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := message.Unmarshal([]byte(tt.json))
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got := m["n"]; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v (%T), want %#v (%T)", got, got, tt.want, tt.want)
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantIs  error
		wantErr string
	}{
		{"list top level", `[1, 2]`, message.ErrNotMap, "got a list"},
		{"string top level", `"x"`, message.ErrNotMap, "got a string"},
		{"number top level", `12`, message.ErrNotMap, "got a number"},
		{"null top level", `null`, message.ErrNotMap, "got null"},
		{"bool top level", `true`, message.ErrNotMap, "got a bool"},
		{"trailing garbage", `{"a": 1} x`, nil, "unexpected data after the object"},
		{"two objects", `{"a": 1}{"b": 2}`, nil, "unexpected data after the object at byte"},
		{"invalid JSON says the offset", `{"a": 1,, "b": 2}`, nil, "invalid JSON at byte 9"},
		{"unterminated", `{"a": `, nil, "decode"},
		{"empty input", ``, nil, "no JSON object"},
		{"only whitespace", " \n ", nil, "no JSON object"},
		{"number out of float range", `{"n": 1e400}`, message.ErrNotJSON, `at "n"`},
		{"nested number out of range says its path", `{"a": {"l": [1, 1e400]}, "b": 2}`, message.ErrNotJSON, `at "a.l[1]"`},
		{"nesting beyond our limit", deepJSON(600), message.ErrNotJSON, "nested deeper than 512"},
		{"nesting beyond the decoder's limit", deepJSON(20000), nil, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := message.Unmarshal([]byte(tt.json))
			if err == nil {
				t.Fatalf("Unmarshal: got %#v, want an error", m)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q: want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error: got %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// deepJSON returns an object whose key "a" holds depth nested lists.
func deepJSON(depth int) string {
	return `{"a": ` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
}

func TestUnmarshalDepthBoundary(t *testing.T) {
	if _, err := message.Unmarshal([]byte(deepJSON(512))); err != nil {
		t.Errorf("512 levels: got %v, want accepted", err)
	}
	if _, err := message.Unmarshal([]byte(deepJSON(513))); err == nil {
		t.Errorf("513 levels: got accepted, want an error")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    message.Message
	}{
		{"empty", message.Message{}},
		{"scalars", message.Message{"s": "x", "t": true, "f": false, "n": nil, "i": int64(-3), "fl": 2.5}},
		{"exact big integers", message.Message{"a": int64(9007199254740993), "max": int64(9223372036854775807), "huge": json.Number("123456789012345678901234567890")}},
		{"unicode and escapes", message.Message{"s": "héllo \"w\"\n\t<tag>&", "ключ": "значение", "emoji": "🙂"}},
		{"nesting", message.Message{"m": map[string]any{"l": []any{int64(1), map[string]any{"x": []any{}}, nil}}}},
		{"framework keys", message.Message{".ipc_transit_meta": map[string]any{"send_ts": 1.7e9 + 0.25}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := message.Marshal(tt.m)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := message.Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.m) {
				t.Errorf("round trip of %s: got %#v, want %#v", b, got, tt.m)
			}
		})
	}
	t.Run("Marshal normalizes", func(t *testing.T) {
		b, err := message.Marshal(message.Message{"i": 1, "l": []string{"a"}})
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if want := `{"i":1,"l":["a"]}`; string(b) != want {
			t.Errorf("got %s, want %s", b, want)
		}
	})
	t.Run("Marshal does not escape HTML", func(t *testing.T) {
		b, err := message.Marshal(message.Message{"s": "<&>"})
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if want := `{"s":"<&>"}`; string(b) != want {
			t.Errorf("got %s, want %s", b, want)
		}
	})
	t.Run("Marshal rejects what is not JSON, naming the path", func(t *testing.T) {
		_, err := message.Marshal(message.Message{"a": []any{make(chan int)}})
		if !errors.Is(err, message.ErrNotJSON) || !strings.Contains(err.Error(), `at "a[0]"`) {
			t.Errorf("got %v, want ErrNotJSON at \"a[0]\"", err)
		}
	})
}

func TestDecoderStream(t *testing.T) {
	d := message.NewDecoder(strings.NewReader("{\"n\": 1}\n{\"n\": 2}\n[3]\n"))
	for i := int64(1); i <= 2; i++ {
		m, err := d.Decode()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m["n"] != i {
			t.Errorf("message %d: got n=%#v, want %d", i, m["n"], i)
		}
	}
	if _, err := d.Decode(); !errors.Is(err, message.ErrNotMap) {
		t.Errorf("third value: got %v, want ErrNotMap", err)
	}
	if _, err := d.Decode(); err != io.EOF {
		t.Errorf("at the end: got %v, want io.EOF", err)
	}
}

func TestEncodeWritesOneLine(t *testing.T) {
	var sb strings.Builder
	if err := message.Encode(&sb, message.Message{"a": "x\ny"}); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if got, want := sb.String(), "{\"a\":\"x\\ny\"}\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// stdMarshal is the reference for Marshal's bytes: encoding/json's
// compact form of the normalized message, HTML not escaped.
func stdMarshal(t *testing.T, m message.Message) []byte {
	t.Helper()
	n, err := message.Normalize(m)
	if err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any(n)); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// TestMarshalAsEncodingJSON: Marshal and Encode write what encoding/json
// writes: keys sorted, HTML characters as they are, U+2028/U+2029 and
// control characters escaped, invalid UTF-8 as \ufffd, floats in
// encoding/json's form, nil maps and lists as null, non-canonical Go
// types normalized first.
func TestMarshalAsEncodingJSON(t *testing.T) {
	for _, m := range []message.Message{
		{},
		{"b": int64(2), "a": int64(1), "c": map[string]any{"z": true, "y": nil}},
		{"s": "\x00\x1f\"\\<>&\u2028\u2029\xff\xfe\x7f\xed\xa0\x80é🙂", "k\n<": "key escaped"},
		{"f": 1e-7, "g": 123456789.0, "h": 1e21, "i": 1e20, "j": math.Copysign(0, -1), "k": 5e-324, "l": 1.7976931348623157e308, "m": -1.5e-9},
		{"n": json.Number("123456789012345678901234567890"), "i": int64(math.MinInt64), "u": uint64(math.MaxUint64), "int": 7},
		{"nilmap": map[string]any(nil), "nillist": []any(nil), "in": []any{map[string]any(nil), []any(nil), []any{}}},
		{"nested": message.Message{"x": []string{"a", "b"}}, "f32": float32(0.1)},
	} {
		want := stdMarshal(t, m)
		got, err := message.Marshal(m)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Marshal(%#v) = %s (%v), want %s", m, got, err, want)
		}
		var buf bytes.Buffer
		if err := message.Encode(&buf, m); err != nil || buf.String() != string(want)+"\n" {
			t.Errorf("Encode(%#v) wrote %q (%v), want %q", m, buf.String(), err, string(want)+"\n")
		}
	}
}
