package transform_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		tr   map[string]any
		want []string
	}{
		{"syntax error", map[string]any{"x": " specials/1 +"}, []string{`transform: key "x": special: `, "unexpected token"}},
		{"empty expression", map[string]any{"x": " specials/ "}, []string{`transform: key "x": special: empty expression`}},
		{"unknown variable", map[string]any{"k": " specials/msg.a"}, []string{`transform: key "k": special: unknown name msg`}},
		{"type error", map[string]any{"x": ` specials/"a" - 1`}, []string{`key "x": special: invalid operation`}},
		{"internal guard names are not in scope", map[string]any{"x": " specials/$mm_budget"}, []string{`key "x": special: unknown name`}},
		{"too many nodes", map[string]any{"x": " specials/" + strings.Repeat("1 + ", transform.MaxNodes) + "1"}, []string{`key "x": special: `, "exceeds maximum allowed nodes"}},
		{"every bad key is named", map[string]any{"a": " specials/(", "b": " specials/)", "c": 1}, []string{`key "a"`, `key "b"`}},
		{"literal that is not JSON", map[string]any{"x": map[string]any{"c": make(chan int)}}, []string{`transform: key "x": `, `at "c"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := transform.Compile(tt.tr)
			if tr != nil {
				t.Errorf("Compile: got a Transform, want nil")
			}
			checkErr(t, err, tt.want)
		})
	}
}

// Expressions must not reach files, the environment or processes: expr
// has no such functions, we add none, and every unknown name fails to
// compile.
func TestSandboxNoSystemAccess(t *testing.T) {
	exprs := []string{
		`readFile("/etc/passwd")`,
		`env("HOME")`,
		`getenv("HOME")`,
		`os.Getenv("HOME")`,
		`exec("id")`,
		`system("id")`,
		`open("/etc/passwd")`,
		`os.ReadFile("/etc/passwd")`,
		`import("os")`,
		`http.Get("http://example.com")`,
		`$env.os.Getenv("HOME")`,
	}
	for _, e := range exprs {
		t.Run(e, func(t *testing.T) {
			_, err := transform.Compile(map[string]any{"x": transform.SpecialPrefix + e})
			if err == nil {
				t.Fatalf("Compile(%s): got no error, want a compile error", e)
			}
			if !strings.Contains(err.Error(), `transform: key "x": special: `) {
				t.Errorf("Compile(%s): got %q, want it to name the key", e, err)
			}
		})
	}
	// timezone() loads time zone data; it only accepts zone names, never
	// paths.
	for _, tz := range []string{"/etc/passwd", "../../../../etc/passwd"} {
		t.Run("timezone "+tz, func(t *testing.T) {
			m := message.Message{}
			err := transform.Apply(m, map[string]any{"x": ` specials/string(timezone("` + tz + `"))`}, nil)
			checkErr(t, err, []string{"invalid location name"})
		})
	}
}

func TestRunTimeLimits(t *testing.T) {
	long := make([]any, 2000)
	for i := range long {
		long[i] = int64(i)
	}
	tests := []struct {
		name    string
		expr    string
		wantIs  error  // errors.Is target, or nil
		wantMsg string // substring, or ""
	}{
		{"huge range", "1..1000000000", nil, "memory budget exceeded"},
		{"ranges in a loop", "map(1..1000, 1..100000)", nil, "memory budget exceeded"},
		{"huge repeat", `repeat("xx", 1000000000)`, transform.ErrByteBudget, ""},
		{"repeat of a long string", `repeat(repeat("x", 1000000), 999999)`, transform.ErrByteBudget, ""},
		{"quadratic concatenation", `reduce(1..999999, #acc + "x", "")`, transform.ErrByteBudget, ""},
		{"doubling replace", `reduce(1..64, replace(#acc, "a", "aaaaaaaaaaaaaaaa"), "a")`, transform.ErrByteBudget, ""},
		{"join of a shared long string", `join(map(1..400, message.s))`, transform.ErrByteBudget, ""},
		{"toJSON of shared lists", `toJSON(reduce(1..60, [#acc, #acc], 1))`, transform.ErrByteBudget, ""},
		{"flatten of shared lists", `flatten(reduce(1..60, [#acc, #acc], 1))`, transform.ErrByteBudget, ""},
		{"median of shared lists", `median(reduce(1..60, [#acc, #acc], 1))`, transform.ErrByteBudget, ""},
		{"result of shared lists", `reduce(1..60, [#acc, #acc], 1)`, nil, "larger than"},
		{"loops running too long", "sum(message.l, sum(message.l, sum(message.l, 1)))", transform.ErrTimeLimit, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantIs != transform.ErrTimeLimit {
				// The budget under test must trip, not the clock of a
				// loaded machine.
				defer transform.SetEvalTimeLimit(time.Minute)()
			}
			m := message.Message{"l": long, "s": strings.Repeat("x", 100_000)}
			err := transform.Apply(m, map[string]any{"x": transform.SpecialPrefix + tt.expr, "y": "kept"}, nil)
			if err == nil {
				t.Fatalf("Apply(%s): got no error, want one", tt.expr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Apply(%s): got %v, want errors.Is %v", tt.expr, err, tt.wantIs)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Apply(%s): got %q, want it to contain %q", tt.expr, err, tt.wantMsg)
			}
			if !errors.Is(err, transform.ErrLimit) {
				t.Errorf("Apply(%s): got %v, want errors.Is ErrLimit", tt.expr, err)
			}
			// A transform that breaks a limit sets no key at all.
			if _, ok := m["x"]; ok {
				t.Errorf("key x: got %.40v, want it unset", m["x"])
			}
			if _, ok := m["y"]; ok {
				t.Errorf("key y: got %v, want it unset", m["y"])
			}
		})
	}
}

// The guards must not change what ordinary expressions compute.
func TestGuardedFunctionsStillWork(t *testing.T) {
	tests := []struct {
		expr string
		want any
	}{
		{`"a" + "b" + message.s`, "abxy"},
		{`message.n + 1`, int64(4)},
		{`message.n + 0.5`, 3.5},
		{`repeat("ab", 3)`, "ababab"},
		{`replace("a-b-c", "-", "+")`, "a+b+c"},
		{`replace("a-b-c", "-", "+", 1)`, "a+b-c"},
		{`join(["a", "b"], ",")`, "a,b"},
		{`join(split("a,b,c", ","), ";")`, "a;b;c"},
		{`splitAfter("a,b", ",")`, []any{"a,", "b"}},
		{`upper(message.s) + lower("Q")`, "XYq"},
		{`toBase64("hi")`, "aGk="},
		{`fromBase64("aGk=")`, "hi"},
		{`toJSON({"a": 1})`, "{\n  \"a\": 1\n}"},
		{`fromJSON("[1, 2.5]")`, []any{1.0, 2.5}},
		{`string(12)`, "12"},
		{`flatten([[1], [2, [3]]])`, []any{int64(1), int64(2), int64(3)}},
		{`max(message.l)`, int64(3)},
		{`min(1, 2)`, int64(1)},
		{`mean([1, 3])`, 2.0},
		{`median([1, 5, 3])`, 3.0},
		{`sort(keys({"b": 1, "a": 2}))`, []any{"a", "b"}},
		{`sort(values({"b": 1, "a": 2}))`, []any{int64(1), int64(2)}},
		{`len(toPairs({"a": 1}))`, int64(1)},
		{`fromPairs([["a", 1]])`, map[string]any{"a": int64(1)}},
		{`uniq([1, 1, 2])`, []any{int64(1), int64(2)}},
		{`concat([1], [2])`, []any{int64(1), int64(2)}},
		{`reverse(message.l)`, []any{int64(2), int64(3), int64(1)}},
		{`take(message.l, 2)`, []any{int64(1), int64(3)}},
		{`filter(message.l, # > 1)`, []any{int64(3), int64(2)}},
		{`map(message.l, "n" + string(#))`, []any{"n1", "n3", "n2"}},
		{`reduce(message.l, #acc + #, 0)`, int64(6)},
		{`count(message.l, # > 1)`, int64(2)},
		{`all(message.l, # > 0) && any(message.l, # == 3) && none(message.l, # > 9) && one(message.l, # == 2)`, true},
		{`find(message.l, # > 1)`, int64(3)},
		{`sortBy(message.l, -#)`, []any{int64(3), int64(2), int64(1)}},
		{`let x = message.s + "!"; x + x`, "xy!xy!"},
		{`message.n > 2 ? "big" : "small"`, "big"},
		{`message.missing ?? "default"`, "default"},
		{`filter(["xa", "b"], # matches "a$")`, []any{"xa"}},
		{`message.s not matches "^q" && message.s matches message.s`, true},
		{`message.s contains "y" && message.s not contains "q" && message.missing not contains "q"`, true},
		{`indexOf(message.s, "y") + lastIndexOf("abca", "a")`, int64(4)},
		{`trim("  a ") + trim("xax", "x")`, "aa"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			m := message.Message{"s": "xy", "n": int64(3), "l": []any{int64(1), int64(3), int64(2)}}
			if err := transform.Apply(m, map[string]any{"out": transform.SpecialPrefix + tt.expr}, nil); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !jsonEqual(m["out"], tt.want) {
				t.Errorf("got %#v, want %#v", m["out"], tt.want)
			}
		})
	}
}
