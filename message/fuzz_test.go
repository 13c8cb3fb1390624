package message_test

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
)

// FuzzUnmarshal: Unmarshal never panics, reads what encoding/json reads
// (the same values, or the same error), whatever it accepts Marshal writes
// as encoding/json does, and it survives Marshal and Unmarshal again.
//
// JSON does not tell integers from floats, so one trip may turn an
// integral float64 (1.0, -0.0) into int64 (1, 0), or an integral float64
// beyond int64 into json.Number: the first round trip must be equal as
// JSON numbers, and what it produced is a fixed point (DeepEqual as Go
// values, byte-identical as JSON).
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"a": "b"}`,
		`{"n": 9007199254740993, "max": 9223372036854775807, "big": 123456789012345678901234567890}`,
		`{"f": 1.5, "g": 1.0, "e": 1e21, "z": -0, "small": 1e-7}`,
		`{"l": [1, "x", null, true, {"m": []}], ".ipc_transit_meta": {"send_ts": 1700000000.25}}`,
		`{"s": "héllo \"w\"\n\u0000 <&> 🙂"}`,
		"{\"s\": \"\\u2028\\u2029 \x7f \xff \\ud800 \\u003c\"}",
		`[1]`,
		`{"a": 1} trailing`,
		`{"a": [[[[[[[[[[]]]]]]]]]]}`,
		`{"a":`,
		`{"n": 1e400}`,
	} {
		f.Add([]byte(s))
	}
	for _, s := range unmarshalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := message.Unmarshal(data)
		want, wantErr := message.UnmarshalStd(data)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) || !reflect.DeepEqual(m, want) {
			t.Fatalf("Unmarshal(%q) = %#v, %v; encoding/json reads %#v, %v", data, m, err, want, wantErr)
		}
		if err != nil {
			return
		}
		b1, err := message.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal of a decoded message: %v", err)
		}
		if want := stdMarshal(t, m); !bytes.Equal(b1, want) {
			t.Fatalf("Marshal(%#v) = %s, encoding/json writes %s", m, b1, want)
		}
		m2, err := message.Unmarshal(b1)
		if err != nil {
			t.Fatalf("Unmarshal(%s) of our own output: %v", b1, err)
		}
		if !sameJSON(map[string]any(m), map[string]any(m2)) {
			t.Fatalf("round trip changed the message: got %#v, want %#v", m2, m)
		}
		b2, err := message.Marshal(m2)
		if err != nil {
			t.Fatalf("second Marshal: %v", err)
		}
		m3, err := message.Unmarshal(b2)
		if err != nil {
			t.Fatalf("Unmarshal(%s) of our own output: %v", b2, err)
		}
		if !reflect.DeepEqual(m2, m3) {
			t.Fatalf("second round trip of %s: got %#v, want %#v", b2, m3, m2)
		}
		b3, err := message.Marshal(m3)
		if err != nil {
			t.Fatalf("third Marshal: %v", err)
		}
		if !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not stable: %s, then %s", b2, b3)
		}
	})
}

// unmarshalSeeds are inputs where JSON readers are known to differ.
var unmarshalSeeds = []string{
	` {"a":1} `,
	"{\"a\":1}\n\t\r",
	"{\"a\":1}\f",
	"\ufeff{\"a\":1}",
	`{"dup": 1, "dup": 2}`,
	`{"dup": {"a": 1}, "dup": {"b": 2}}`,
	`{"over": 9223372036854775808, "under": -9223372036854775809, "z": -0, "zf": -0.0, "E": 2E+3}`,
	`{"n": 01}`, `{"n": -}`, `{"n": 1.}`, `{"n": .5}`, `{"n": 1e}`, `{"n": +1}`, `{"n": NaN}`, `{"n": 0x10}`,
	"{\"bad utf8\": \"a\xffb\xc3\", \"k\xfe\": 1}",
	`{"sur": "\ud800 \udc00x \ud83d\ude00 \uD83D\uDE00 \ud83dx"}`,
	"{\"ctl\": \"a\x01b\"}",
	`{"u": "\u12"}`, `{"u": "\x"}`, `{"u": "\'"}`,
	`{"a": 1,}`, `{"a": [1,]}`, `{"a" 1}`, `{'a': 1}`, `{a: 1}`,
	`{"a": 1} trailing`, `{"a": 1}{}`, `{"a": 1} {"b": 2}`, `{"a": 1}]`,
	`null`, `true`, `[{}]`, ``, `   `, `{`, `}`,
	`{"t": tru}`, `{"t": True}`, `{"t": nul}`,
	`{"deep": ` + strings.Repeat(`[`, 300) + strings.Repeat(`]`, 300) + `}`,
	`{"deeper": ` + strings.Repeat(`{"a":`, 600) + `1` + strings.Repeat(`}`, 600) + `}`,
	`{"deepest": ` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}`,
}

// sameJSON compares canonical values, numbers by value.
func sameJSON(a, b any) bool { return message.Equal(a, b) }

// FuzzCopy: a message's copy is deeply equal to it and shares no map or
// list with it, so changing every container of the copy leaves the
// original as it was.
func FuzzCopy(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"seq":12345,"bench_ts":1795734695018641700,"source":"Producer","pad":"xxxx",".ipc_transit_meta":{"send_ts":1795734695.0186417}}`,
		`{"l": [1, "x", null, true, {"m": [], "n": {}}], "e": [], "m": {"a": {"b": {"c": [[]]}}}}`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":{"j":[{"k":9}]}}`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":{"i":[{"j":8}]}}`, // 8 keys: rebuilt
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8}`,               // 8 keys, no containers: cloned
	} {
		f.Add([]byte(s))
	}
	for _, s := range unmarshalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := message.Unmarshal(data)
		want, wantErr := message.UnmarshalStd(data)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) || !reflect.DeepEqual(m, want) {
			t.Fatalf("Unmarshal(%q) = %#v, %v; encoding/json reads %#v, %v", data, m, err, want, wantErr)
		}
		if err != nil {
			return
		}
		before, err := message.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		c := m.Copy()
		if !reflect.DeepEqual(m, c) {
			t.Fatalf("copy: got %#v, want %#v", c, m)
		}
		noShared(t, map[string]any(m), map[string]any(c), "")
		scribble(map[string]any(c))
		after, err := message.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if !bytes.Equal(before, after) {
			t.Fatalf("original after changing the copy: got %s, want %s", after, before)
		}
	})
}

// noShared fails if the copy c shares a map or a list's backing array
// with the original o.
func noShared(t *testing.T, o, c any, path string) {
	t.Helper()
	switch ot := o.(type) {
	case map[string]any:
		ct := c.(map[string]any)
		if reflect.ValueOf(ot).UnsafePointer() == reflect.ValueOf(ct).UnsafePointer() {
			t.Fatalf("map at %q is shared", path)
		}
		for k, v := range ot {
			noShared(t, v, ct[k], path+"."+k)
		}
	case []any:
		ct := c.([]any)
		if cap(ot) > 0 && cap(ct) > 0 && &ot[:cap(ot)][0] == &ct[:cap(ct)][0] {
			t.Fatalf("list at %q shares its backing array", path)
		}
		for i := range ot {
			noShared(t, ot[i], ct[i], fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// scribble changes every map and list in v, in place.
func scribble(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			scribble(e)
			if _, container := e.(map[string]any); !container {
				if _, list := e.([]any); !list {
					t[k] = "scribbled"
				}
			}
		}
		t["scribbled"] = true
	case []any:
		for i, e := range t {
			scribble(e)
			if _, container := e.(map[string]any); !container {
				if _, list := e.([]any); !list {
					t[i] = "scribbled"
				}
			}
		}
	}
}

// FuzzCopier: every copy a Copier makes of a message is deeply equal to
// it and shares no map or list with it or with the other copies, and
// scribbling over the copies leaves the original's JSON unchanged.
func FuzzCopier(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"seq":12345,"source":"Producer","pad":"xxxx",".ipc_transit_meta":{"send_ts":1795734695.0186417}}`,
		`{"l": [1, {"m": [], "n": {}}], "e": [], "m": {"a": {"b": {"c": [[]]}}}, "leaf": {"k": "v"}}`,
		`{"a":[1],"b":[2],"c":{},"d":{"x":1},"e":[]}`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":{"i":[{"j":8}]}}`,
	} {
		f.Add([]byte(s))
	}
	for _, s := range unmarshalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := message.Unmarshal(data)
		want, wantErr := message.UnmarshalStd(data)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) || !reflect.DeepEqual(m, want) {
			t.Fatalf("Unmarshal(%q) = %#v, %v; encoding/json reads %#v, %v", data, m, err, want, wantErr)
		}
		if err != nil {
			return
		}
		before, err := message.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var c message.Copier
		c.Reset(m)
		var copies []message.Message
		for range 3 {
			got := c.Copy()
			if !reflect.DeepEqual(m, got) {
				t.Fatalf("copy: got %#v, want %#v", got, m)
			}
			noShared(t, map[string]any(m), map[string]any(got), "")
			for _, other := range copies {
				noShared(t, map[string]any(other), map[string]any(got), "")
			}
			copies = append(copies, got)
		}
		for _, cp := range copies {
			scribble(map[string]any(cp))
		}
		after, err := message.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if !bytes.Equal(before, after) {
			t.Fatalf("original after changing the copies: got %s, want %s", after, before)
		}
	})
}
