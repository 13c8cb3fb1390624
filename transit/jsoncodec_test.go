package transit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
)

var codecSeeds = []string{
	`{}`,
	`{"a": "b"}`,
	` {"a":1} `,
	`{"n": 9007199254740993, "max": 9223372036854775807, "min": -9223372036854775808, "big": 123456789012345678901234567890}`,
	`{"over": 9223372036854775808, "under": -9223372036854775809, "huge": 1` + strings.Repeat("0", 400) + `}`,
	`{"f": 1.5, "g": 1.0, "e": 1e21, "z": -0, "zf": -0.0, "small": 1e-7, "E": 2E+3, "neg": -12.5e-3}`,
	`{"l": [1, "x", null, true, false, {"m": []}], ".ipc_transit_meta": {"send_ts": 1700000000.25}}`,
	`{"s": "héllo \"w\"\n\u0000 <&> 🙂 \u2028 \ud83d\ude00 \ud800 \udc00x \/ \b\f\r\t"}`,
	"{\"bad utf8\": \"a\xffb\xc3\"}",
	"{\"ctl\": \"a\x01b\"}",
	"{\"del\": \"a\x7fb\"}",
	`{"dup": 1, "dup": 2}`,
	`[1]`,
	`"s"`,
	`{"a": 1} trailing`,
	`{"a": 1}{}`,
	`{"a": [[[[[[[[[[]]]]]]]]]]}`,
	`{"a":`,
	`{"n": 1e400}`,
	`{"n": 01}`,
	`{"n": -}`,
	`{"n": 1.}`,
	`{"n": .5}`,
	`{"n": 1e}`,
	`{"t": tru}`,
	`{"a" 1}`,
	`{"a": 1,}`,
	`{"a": [1,]}`,
	`{"u": "\u12"}`,
	`{"u": "\x"}`,
	``,
	`   `,
	`{"deep": ` + strings.Repeat(`[`, 300) + strings.Repeat(`]`, 300) + `}`,
	`{"deeper": ` + strings.Repeat(`{"a":`, 600) + `1` + strings.Repeat(`}`, 600) + `}`,
}

// FuzzCodec: the bus codec reads exactly what message.Unmarshal reads and
// writes exactly what message.Marshal writes.
func FuzzCodec(f *testing.F) {
	for _, s := range codecSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkCodec(t, data)
	})
}

func checkCodec(t *testing.T, data []byte) {
	t.Helper()
	want, wantErr := message.Unmarshal(data)
	got, err := unmarshal(data)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("unmarshal(%q): got error %v, want %v", data, err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("unmarshal(%q): got %#v, want %#v", data, got, want)
	}
	if wantErr != nil {
		return
	}
	wantB, err := message.Marshal(want)
	if err != nil {
		t.Fatalf("message.Marshal: %v", err)
	}
	gotB, err := marshal(want)
	if err != nil || !bytes.Equal(gotB, wantB) {
		t.Fatalf("marshal(%#v): got %s (%v), want %s", want, gotB, err, wantB)
	}
}

func TestMarshalValues(t *testing.T) {
	for _, m := range []message.Message{
		{"f": 1e-7, "g": 123456789.0, "h": 1e21, "i": 1e20, "j": -0.0, "k": 5e-324, "l": 1.7976931348623157e308},
		{"s": "\x00\x1f\"\\<>&\u2028\u2029\xff\xfe", "k\n": "key escaped"},
		{"n": json.Number("123456789012345678901234567890"), "neg": json.Number("-1")},
		{"m": map[string]any{"z": 1.5, "a": []any{nil, true, int64(-3), "x"}}},
	} {
		want, err := message.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := marshal(m)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("marshal(%#v): got %s (%v), want %s", m, got, err, want)
		}
	}
}

func BenchmarkCodec200B(b *testing.B) {
	m := message.Message{"i": int64(12345), "source": "bench", "text": strings.Repeat("x", 110),
		message.MetaKey: map[string]any{"send_ts": 1795725511.123456}}
	data, _ := message.Marshal(m)
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			marshal(m)
		}
	})
	b.Run("message.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			message.Marshal(m)
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			unmarshal(data)
		}
	})
	b.Run("message.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			message.Unmarshal(data)
		}
	})
}
