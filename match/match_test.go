package match_test

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

func TestMatchRules(t *testing.T) {
	tests := []struct {
		name    string
		msg     message.Message
		pattern map[string]any
		want    bool
	}{
		// scalar vs scalar
		{"string equal", message.Message{"a": "x"}, map[string]any{"a": "x"}, true},
		{"string differs", message.Message{"a": "x"}, map[string]any{"a": "y"}, false},
		{"int64 vs int64", message.Message{"a": int64(7)}, map[string]any{"a": int64(7)}, true},
		{"int64 vs other int64", message.Message{"a": int64(7)}, map[string]any{"a": int64(8)}, false},
		{"int64 vs numeric string", message.Message{"a": int64(-12)}, map[string]any{"a": "-12"}, true},
		{"int64 vs non-canonical numeric string", message.Message{"a": int64(12)}, map[string]any{"a": "012"}, false},
		{"int64 vs plus-signed string", message.Message{"a": int64(12)}, map[string]any{"a": "+12"}, false},
		{"int64 vs integral float", message.Message{"a": int64(3)}, map[string]any{"a": 3.0}, true},
		{"integral float vs int64", message.Message{"a": 3.0}, map[string]any{"a": int64(3)}, true},
		{"fraction float vs string", message.Message{"a": 1.5}, map[string]any{"a": "1.5"}, true},
		{"fraction float vs float", message.Message{"a": 0.1}, map[string]any{"a": 0.1}, true},
		{"fraction float vs other float", message.Message{"a": 0.1}, map[string]any{"a": 0.2}, false},
		{"float beyond 15 digits prints like Perl", message.Message{"a": 0.1 + 0.2}, map[string]any{"a": "0.3"}, true},
		{"large float in exponent form", message.Message{"a": 1e20}, map[string]any{"a": "1e+20"}, true},
		{"1e15 is not printed as an integer", message.Message{"a": 1e15}, map[string]any{"a": int64(1e15)}, false},
		{"big integer json.Number", message.Message{"a": json.Number("123456789012345678901")}, map[string]any{"a": "123456789012345678901"}, true},
		{"big integer pattern json.Number", message.Message{"a": "123456789012345678901"}, map[string]any{"a": json.Number("123456789012345678901")}, true},
		{"non-canonical json.Number pattern", message.Message{"a": int64(3)}, map[string]any{"a": json.Number("3.0")}, true},
		{"Go int pattern", message.Message{"a": int64(5)}, map[string]any{"a": 5}, true},
		{"Go int message value", message.Message{"a": 5}, map[string]any{"a": "5"}, true},
		{"string vs int pattern", message.Message{"a": "5"}, map[string]any{"a": 5}, true},
		{"int64 min", message.Message{"a": int64(math.MinInt64)}, map[string]any{"a": "-9223372036854775808"}, true},
		// bools
		{"bool true vs true", message.Message{"a": true}, map[string]any{"a": true}, true},
		{"bool false vs false", message.Message{"a": false}, map[string]any{"a": false}, true},
		{"bool vs string 1", message.Message{"a": true}, map[string]any{"a": "1"}, false},
		{"bool vs string true", message.Message{"a": true}, map[string]any{"a": "true"}, false},
		{"number vs bool pattern", message.Message{"a": int64(1)}, map[string]any{"a": true}, false},
		{"false vs 0", message.Message{"a": false}, map[string]any{"a": int64(0)}, false},
		{"bool in list", message.Message{"a": []any{"x", true}}, map[string]any{"a": true}, true},
		{"bool not in list", message.Message{"a": []any{"x", false}}, map[string]any{"a": true}, false},
		// null and missing
		{"missing key", message.Message{}, map[string]any{"a": "x"}, false},
		{"null message value vs string", message.Message{"a": nil}, map[string]any{"a": "x"}, false},
		{"null message value vs empty map", message.Message{"a": nil}, map[string]any{"a": map[string]any{}}, false},
		{"null pattern value", message.Message{"a": "x"}, map[string]any{"a": nil}, false},
		{"null in list never equals", message.Message{"a": []any{nil}}, map[string]any{"a": []any{nil}}, false},
		{"nil message, empty pattern", nil, map[string]any{}, true},
		{"nil message, pattern", nil, map[string]any{"a": "b"}, false},
		{"nil pattern map", message.Message{"a": "b"}, nil, true},
		// maps
		{"empty map pattern vs map", message.Message{"a": map[string]any{"x": 1}}, map[string]any{"a": map[string]any{}}, true},
		{"empty map pattern vs scalar", message.Message{"a": "x"}, map[string]any{"a": map[string]any{}}, false},
		{"nested Message value", message.Message{"a": message.Message{"b": "c"}}, map[string]any{"a": map[string]any{"b": "c"}}, true},
		{"Message pattern value", message.Message{"a": map[string]any{"b": "c"}}, map[string]any{"a": message.Message{"b": "c"}}, true},
		// lists
		{"membership string", message.Message{"a": []any{"x", "y"}}, map[string]any{"a": "y"}, true},
		{"membership number text", message.Message{"a": []any{int64(1), 2.5}}, map[string]any{"a": "2.5"}, true},
		{"membership ignores nested lists", message.Message{"a": []any{[]any{"y"}}}, map[string]any{"a": "y"}, false},
		{"membership in empty list", message.Message{"a": []any{}}, map[string]any{"a": "y"}, false},
		{"list vs empty list", message.Message{"a": []any{int64(1)}}, map[string]any{"a": []any{}}, true},
		{"scalar vs list pattern", message.Message{"a": "x"}, map[string]any{"a": []any{"x"}}, false},
		{"list vs list with regex element", message.Message{"a": []any{"hello"}}, map[string]any{"a": []any{" special/^h/"}}, true},
		{"list vs list element mismatch", message.Message{"a": []any{"x", "y"}}, map[string]any{"a": []any{"x", "z"}}, false},
		{"list vs map with number elements", message.Message{"a": []any{int64(1), 2.0}}, map[string]any{"a": map[string]any{"1": true, "2": true}}, true},
		{"list vs map with a map element", message.Message{"a": []any{map[string]any{}}}, map[string]any{"a": map[string]any{"x": 1}}, false},
		{"empty list vs map", message.Message{"a": []any{}}, map[string]any{"a": map[string]any{"x": 1}}, true},
		{"list vs map, null element", message.Message{"a": []any{nil}}, map[string]any{"a": map[string]any{"x": 1}}, false},
		// regex specials
		{"regex on number", message.Message{"a": int64(404)}, map[string]any{"a": " special/^4\\d\\d$/"}, true},
		{"regex on float", message.Message{"a": 2.5}, map[string]any{"a": " special/^2\\.5$/"}, true},
		{"regex on bool", message.Message{"a": true}, map[string]any{"a": " special/1/"}, false},
		{"regex on map", message.Message{"a": map[string]any{"x": "1"}}, map[string]any{"a": " special/1/"}, false},
		{"regex with slashes inside", message.Message{"p": "/a/b"}, map[string]any{"p": " special/^/a/b$/"}, true},
		{"regex m flag", message.Message{"a": "x\nfoo"}, map[string]any{"a": " special/^foo$/m"}, true},
		{"regex without m flag", message.Message{"a": "x\nfoo"}, map[string]any{"a": " special/^foo$/"}, false},
		{"regex s flag", message.Message{"a": "a\nb"}, map[string]any{"a": " special/a.b/s"}, true},
		{"regex without s flag", message.Message{"a": "a\nb"}, map[string]any{"a": " special/a.b/"}, false},
		{"regex several flags", message.Message{"a": "X\nFOO"}, map[string]any{"a": " special/^foo$/im"}, true},
		{"empty regex", message.Message{"a": ""}, map[string]any{"a": " special//"}, true},
		// odd message contents: no panic, no match
		{"[]string value", message.Message{"a": []string{"x"}}, map[string]any{"a": "x"}, false},
		{"int32 value", message.Message{"a": int32(1)}, map[string]any{"a": "1"}, false},
		{"chan value", message.Message{"a": make(chan int)}, map[string]any{"a": map[string]any{}}, false},
		{"map[string]string value", message.Message{"a": map[string]string{"b": "c"}}, map[string]any{"a": map[string]any{"b": "c"}}, false},
		{"NaN value", message.Message{"a": math.NaN()}, map[string]any{"a": "NaN"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := match.Compile(tt.pattern)
			if err != nil {
				t.Fatalf("Compile(%v): %v", tt.pattern, err)
			}
			if got := p.Match(tt.msg); got != tt.want {
				t.Errorf("Match(%v) against %v: got %v, want %v", tt.msg, tt.pattern, got, tt.want)
			}
			got, _ := p.MatchCaptures(tt.msg)
			if got != tt.want {
				t.Errorf("MatchCaptures(%v) against %v: got %v, want %v", tt.msg, tt.pattern, got, tt.want)
			}
		})
	}
}

func TestMatchCaptures(t *testing.T) {
	tests := []struct {
		name     string
		msg      message.Message
		pattern  map[string]any
		wantOK   bool
		wantCaps match.Captures
	}{
		{"P-style named group", message.Message{"path": "/users/dana"},
			map[string]any{"path": " special/^/users/(?P<user>[a-z]+)$/"}, true, match.Captures{"user": "dana"}},
		{"angle-style named group", message.Message{"host": "web12"},
			map[string]any{"host": " special/^(?<role>[a-z]+)(?<num>\\d+)$/"}, true, match.Captures{"role": "web", "num": "12"}},
		{"unnamed groups capture nothing", message.Message{"host": "web12"},
			map[string]any{"host": " special/^([a-z]+)/"}, true, nil},
		{"group that did not take part", message.Message{"a": "x"},
			map[string]any{"a": " special/^(?P<y>y)?x$/"}, true, nil},
		{"empty group that took part", message.Message{"a": "x"},
			map[string]any{"a": " special/^(?P<e>)x$/"}, true, match.Captures{"e": ""}},
		{"no regex", message.Message{"a": "x"}, map[string]any{"a": "x"}, true, nil},
		{"no match gives no captures", message.Message{"a": "web1", "b": "x"},
			map[string]any{"a": " special/(?P<n>\\d)/", "b": "y"}, false, nil},
		{"captures from nested and list patterns", message.Message{"a": map[string]any{"b": "k=v"}, "l": []any{"id7"}},
			map[string]any{"a": map[string]any{"b": " special/^(?P<k>\\w)=(?P<v>\\w)$/"}, "l": []any{" special/(?P<id>\\d)/"}},
			true, match.Captures{"k": "k", "v": "v", "id": "7"}},
		{"later key wins a name clash", message.Message{"a": "1", "b": "2"},
			map[string]any{"a": " special/(?P<n>\\d)/", "b": " special/(?P<n>\\d)/"}, true, match.Captures{"n": "2"}},
		{"capture from a number", message.Message{"code": int64(404)},
			map[string]any{"code": " special/^(?P<class>\\d)/"}, true, match.Captures{"class": "4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := match.MustCompile(tt.pattern)
			ok, caps := p.MatchCaptures(tt.msg)
			if ok != tt.wantOK {
				t.Errorf("matched: got %v, want %v", ok, tt.wantOK)
			}
			if !reflect.DeepEqual(caps, tt.wantCaps) {
				t.Errorf("captures: got %#v, want %#v", caps, tt.wantCaps)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name    string
		pattern map[string]any
		want    []string // substrings the error must contain
	}{
		{"bad regex", map[string]any{"a": map[string]any{"b": " special/(/"}},
			[]string{`match: at "a.b": bad regex " special/(/"`, "missing closing )"}},
		{"bad regex in list", map[string]any{"a": []any{"x", " special/[/"}},
			[]string{`at "a[1]": bad regex`}},
		{"unknown flag", map[string]any{"a": " special/x/g"},
			[]string{`at "a"`, `unknown flag 'g'`}},
		{"x flag is not RE2", map[string]any{"a": " special/x/x"},
			[]string{`unknown flag 'x'`}},
		{"no closing slash", map[string]any{"a": " special/abc"},
			[]string{`at "a"`, "no closing slash"}},
		{"unknown special", map[string]any{"a": " specials/message.x"},
			[]string{`at "a"`, `unknown special " specials/message.x"`}},
		{"not JSON-compatible", map[string]any{"a": map[string]any{"c": make(chan int)}},
			[]string{`match: at "a.c": chan int value is not JSON-compatible`}},
		{"func value", map[string]any{"f": func() {}},
			[]string{`at "f"`, "not JSON-compatible"}},
		{"NaN", map[string]any{"n": math.NaN()}, []string{`at "n": NaN is not a JSON number`}},
		{"infinity", map[string]any{"n": math.Inf(1)}, []string{`at "n": +Inf is not a JSON number`}},
		{"bad json.Number", map[string]any{"n": json.Number("abc")}, []string{`at "n"`}},
		{"map with int keys", map[string]any{"m": map[int]any{1: "x"}}, []string{`at "m"`}},
		{"too deep", deepPattern(600), []string{"nested deeper than 512 levels"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := match.Compile(tt.pattern)
			if err == nil {
				t.Fatalf("Compile: got pattern %v and no error, want an error", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error: got %q, want it to contain %q", err, w)
				}
			}
			ok, err := match.Match(message.Message{}, tt.pattern)
			if err == nil || ok {
				t.Errorf("Match: got (%v, %v), want (false, error)", ok, err)
			}
		})
	}
}

func deepPattern(depth int) map[string]any {
	p := map[string]any{"leaf": "x"}
	for range depth {
		p = map[string]any{"k": p}
	}
	return p
}

func TestCompileConvertsGoTypes(t *testing.T) {
	tests := []struct {
		name    string
		pattern map[string]any
		msg     message.Message
		want    bool
	}{
		{"[]string pattern", map[string]any{"a": []string{"x", "y"}}, message.Message{"a": []any{"x", "y", "z"}}, true},
		{"uint8 pattern", map[string]any{"a": uint8(9)}, message.Message{"a": int64(9)}, true},
		{"float32 pattern", map[string]any{"a": float32(0.5)}, message.Message{"a": 0.5}, true},
		{"huge uint64 pattern", map[string]any{"a": uint64(math.MaxUint64)}, message.Message{"a": json.Number("18446744073709551615")}, true},
		{"map[string]string pattern", map[string]any{"a": map[string]string{"b": "c"}}, message.Message{"a": map[string]any{"b": "c"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := match.Compile(tt.pattern)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := p.Match(tt.msg); got != tt.want {
				t.Errorf("Match: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEmptyAndNilPatterns(t *testing.T) {
	msgs := []message.Message{nil, {}, {"a": "b"}}
	patterns := []struct {
		name string
		p    *match.Pattern
	}{
		{"nil *Pattern", nil},
		{"zero Pattern", &match.Pattern{}},
		{"compiled empty", match.MustCompile(map[string]any{})},
	}
	for _, pt := range patterns {
		t.Run(pt.name, func(t *testing.T) {
			for _, m := range msgs {
				if !pt.p.Match(m) {
					t.Errorf("Match(%v): got false, want true", m)
				}
				ok, caps := pt.p.MatchCaptures(m)
				if !ok || caps != nil {
					t.Errorf("MatchCaptures(%v): got (%v, %v), want (true, nil)", m, ok, caps)
				}
			}
		})
	}
}

func TestMustCompilePanicsOnBadPattern(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("MustCompile of a bad regex: got no panic, want one")
		}
		if !strings.Contains(r.(error).Error(), "bad regex") {
			t.Errorf("panic: got %v, want a bad regex error", r)
		}
	}()
	match.MustCompile(map[string]any{"a": " special/(/"})
}

// TestPatternNotAliased checks that changing the pattern map after Compile
// does not change what the compiled Pattern matches.
func TestPatternNotAliased(t *testing.T) {
	src := map[string]any{"a": "x", "l": []any{"y"}}
	p := match.MustCompile(src)
	src["a"] = "changed"
	src["l"].([]any)[0] = "changed"
	msg := message.Message{"a": "x", "l": []any{"y"}}
	if !p.Match(msg) {
		t.Errorf("Match after mutating the source pattern: got false, want true")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	p := match.MustCompile(map[string]any{"source": "Example1", "ct": int64(5), "f": 2.5, "tags": "b", "keys": map[string]any{"k1": 1, "k2": 1},
		"pad": " special/^x*$/", "seq": " special/^[0-9]+$/", "host": " special/^web/"})
	msg := message.Message{"source": "Example1", "ct": int64(5), "f": 2.5, "tags": []any{"a", "b"}, "keys": []any{"k1", "k2"}, "other": "x",
		"pad": strings.Repeat("x", 110), "seq": int64(123456), "host": "web12"}
	if !p.Match(msg) {
		t.Fatal("Match: got false, want true")
	}
	tests := []struct {
		name string
		fn   func()
	}{
		{"Match", func() { p.Match(msg) }},
		{"MatchCaptures", func() { p.MatchCaptures(msg) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.fn); got != 0 {
				t.Errorf("allocs per run: got %v, want 0", got)
			}
		})
	}
}

// TestScalarTextAgreement checks that matching compares numbers exactly as
// message.ScalarText prints them, over awkward values.
func TestScalarTextAgreement(t *testing.T) {
	values := []any{
		int64(0), int64(-1), int64(math.MaxInt64), int64(math.MinInt64),
		0.0, math.Copysign(0, -1), 1.0, -1.0, 0.5, 1e14, 999999999999999.0, 1e15, -1e15, 1e16,
		1e300, -1e-300, 5e-324, 123456789.123456789, 0.1 + 0.2, 3.0000000000000004,
		json.Number("99999999999999999999"),
	}
	for _, v := range values {
		text, ok := message.ScalarText(v)
		if !ok {
			t.Fatalf("ScalarText(%v): not a scalar", v)
		}
		t.Run(text, func(t *testing.T) {
			msg := message.Message{"v": v}
			if !match.MustCompile(map[string]any{"v": text}).Match(msg) {
				t.Errorf("value %#v vs its text %q: got false, want true", v, text)
			}
			if !match.MustCompile(map[string]any{"v": v}).Match(message.Message{"v": text}) {
				t.Errorf("text %q vs pattern %#v: got false, want true", text, v)
			}
			if match.MustCompile(map[string]any{"v": text + "0x"}).Match(msg) {
				t.Errorf("value %#v vs %q: got true, want false", v, text+"0x")
			}
		})
	}
}
