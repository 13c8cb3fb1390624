package transit

import (
	"bytes"
	"encoding/json"
	"math"
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
	`{}]`,
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
// writes exactly what encoding/json writes, as message.Marshal does.
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
	// decodeExact reads the same, except what unmarshal would change.
	exact, exactErr := decodeExact(data)
	if at := lossyAt(data); at >= 0 {
		if exactErr == nil {
			t.Fatalf("decodeExact(%q): no error, want one about byte %d", data, at)
		}
	} else if (exactErr == nil) != (wantErr == nil) || !reflect.DeepEqual(exact, want) {
		t.Fatalf("decodeExact(%q): got %#v, %v; want %#v, %v", data, exact, exactErr, want, wantErr)
	}
	if wantErr != nil {
		return
	}
	wantB, err := stdMarshal(want)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	gotB, err := marshal(want)
	if err != nil || !bytes.Equal(gotB, wantB) {
		t.Fatalf("marshal(%#v): got %s (%v), want %s", want, gotB, err, wantB)
	}
	if msgB, err := message.Marshal(want); err != nil || !bytes.Equal(msgB, wantB) {
		t.Fatalf("message.Marshal(%#v): got %s (%v), want %s", want, msgB, err, wantB)
	}
}

// stdMarshal is the reference for the bytes of a message: encoding/json's
// compact form of the normalized message, HTML not escaped.
func stdMarshal(m message.Message) ([]byte, error) {
	n, err := message.Normalize(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any(n)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func TestMarshalValues(t *testing.T) {
	for _, m := range []message.Message{
		{"f": 1e-7, "g": 123456789.0, "h": 1e21, "i": 1e20, "j": math.Copysign(0, -1), "k": 5e-324, "l": 1.7976931348623157e308},
		{"s": "\x00\x1f\"\\<>&\u2028\u2029\xff\xfe", "k\n": "key escaped"},
		{"n": json.Number("123456789012345678901234567890"), "neg": json.Number("-1")},
		{"m": map[string]any{"z": 1.5, "a": []any{nil, true, int64(-3), "x"}}},
		{"nilmap": map[string]any(nil), "nillist": []any(nil), "in": []any{map[string]any(nil), []any(nil)}},
		{"empty": map[string]any{}, "emptylist": []any{}},
		{"del": "a\x7fb", "html": "<script>&amp;</script>", "sep": "\u2028\u2029", "bad": "\xc3(\xed\xa0\x80"},
	} {
		want, err := stdMarshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := marshal(m)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("marshal(%#v): got %s (%v), want %s", m, got, err, want)
		}
		if got, err := message.Marshal(m); err != nil || !bytes.Equal(got, want) {
			t.Errorf("message.Marshal(%#v): got %s (%v), want %s", m, got, err, want)
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

// FuzzMarshal: for messages built from arbitrary bytes (every canonical
// type, nil maps and lists, odd strings and floats), marshal writes what
// encoding/json writes.
func FuzzMarshal(f *testing.F) {
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08"))
	f.Add([]byte("\x05\x03a\xff\x06\x02\x01\x07\x04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &gen{data: data}
		m := message.Message{}
		for len(g.data) > 0 {
			m[g.str()] = g.value(0)
		}
		want, werr := stdMarshal(m)
		got, err := marshal(m)
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("marshal(%#v): got %s (%v), want %s (%v)", m, got, err, want, werr)
		}
	})
}

// gen builds values from fuzz bytes.
type gen struct{ data []byte }

func (g *gen) byte() byte {
	if len(g.data) == 0 {
		return 0
	}
	b := g.data[0]
	g.data = g.data[1:]
	return b
}

func (g *gen) str() string {
	n := int(g.byte() % 8)
	if n > len(g.data) {
		n = len(g.data)
	}
	s := string(g.data[:n])
	g.data = g.data[n:]
	return s
}

func (g *gen) value(depth int) any {
	floats := []float64{0, math.Copysign(0, -1), 1, 1.5, -2.25, 1e-7, 1e-6, 1e20, 1e21, 123456789.125, 5e-324, 1.7976931348623157e308}
	switch k := g.byte() % 11; {
	case k == 0:
		return nil
	case k == 1:
		return g.byte()%2 == 0
	case k == 2:
		return g.str()
	case k == 3:
		return int64(g.byte())<<(g.byte()%56) - int64(g.byte())
	case k == 4:
		return floats[int(g.byte())%len(floats)] * float64(int(g.byte())-128)
	case k == 5:
		return json.Number("1" + strings.Repeat("0", int(g.byte()%30)))
	case k == 6 && depth < 4:
		m := map[string]any{}
		for range int(g.byte() % 4) {
			m[g.str()] = g.value(depth + 1)
		}
		return m
	case k == 7 && depth < 4:
		var l []any
		for range int(g.byte() % 4) {
			l = append(l, g.value(depth+1))
		}
		return l
	case k == 8:
		return map[string]any(nil)
	case k == 9:
		return []any(nil)
	}
	return "x"
}
