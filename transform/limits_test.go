package transform_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// The byte budget belongs to one application of a transform: every key,
// every nested value, expressions and literals together. Per key, a
// transform of many keys each building just under the budget built
// gigabytes from one small message.
func TestOneByteBudgetPerApplication(t *testing.T) {
	defer transform.SetEvalTimeLimit(time.Minute)() // the budget must trip, not the clock
	a1000 := strings.Repeat("a", 1000)
	tests := []struct {
		name string
		tr   map[string]any
		msg  message.Message
	}{
		{
			// 4 keys of 10 MB each: each is under the budget, together
			// they are over it.
			name: "keys building strings",
			tr: func() map[string]any {
				tr := map[string]any{}
				for i := range 4 {
					tr[fmt.Sprintf("k%d", i)] = ` specials/repeat("` + a1000 + `", 10000)`
				}
				return tr
			}(),
			msg: message.Message{},
		},
		{
			// Results that share the message's string still make the
			// message that large.
			name: "keys copying a long string",
			tr: func() map[string]any {
				tr := map[string]any{}
				for i := range 20 {
					tr[fmt.Sprintf("k%d", i)] = ` specials/message.s`
				}
				return tr
			}(),
			msg: message.Message{"s": strings.Repeat("x", 2<<20)},
		},
		{
			name: "keys copying a nested list",
			tr: func() map[string]any {
				tr := map[string]any{}
				for i := range 20 {
					tr[fmt.Sprintf("k%d", i)] = ` specials/message.l`
				}
				return tr
			}(),
			msg: message.Message{"l": []any{map[string]any{"deep": []any{strings.Repeat("y", 2<<20)}}}},
		},
		{
			name: "literals count too",
			tr: map[string]any{
				"lit": strings.Repeat("z", 20<<20),
				"k":   ` specials/repeat("` + a1000 + `", 15000)`,
			},
			msg: message.Message{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := transform.Compile(tt.tr)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			m := tt.msg
			keys := len(m)
			var applyErr error
			alloc := allocated(func() { applyErr = tr.Apply(m, nil) })
			if !errors.Is(applyErr, transform.ErrByteBudget) || !errors.Is(applyErr, transform.ErrLimit) {
				t.Fatalf("Apply: got %v, want the byte budget error", applyErr)
			}
			if len(m) != keys {
				t.Errorf("the message got %d keys, want none: a transform that breaks a limit sets nothing", len(m)-keys)
			}
			if alloc > 2*transform.MaxEvalBytes {
				t.Errorf("Apply allocated %d MB, want at most twice the budget (%d MB)", alloc>>20, 2*transform.MaxEvalBytes>>20)
			}
		})
	}
}

// The attack message: 100 keys each building 30 MB. It no longer
// compiles (too many expressions); under the cap, it fails at the second
// key and allocates little.
func TestManyExpensiveKeysRefused(t *testing.T) {
	defer transform.SetEvalTimeLimit(time.Minute)()
	a1000 := strings.Repeat("a", 1000)
	attack := func(n int) map[string]any {
		tr := map[string]any{}
		for i := range n {
			tr[fmt.Sprintf("k%03d", i)] = ` specials/repeat("` + a1000 + `", 30000)`
		}
		return tr
	}
	_, err := transform.Compile(attack(100))
	if !errors.Is(err, transform.ErrLimit) || !strings.Contains(err.Error(), "100 expressions, at most 32") {
		t.Fatalf("Compile of 100 expressions: got %v, want the limit on expressions", err)
	}
	tr, err := transform.Compile(attack(transform.MaxSpecials))
	if err != nil {
		t.Fatalf("Compile of %d expressions: %v", transform.MaxSpecials, err)
	}
	m := message.Message{}
	var applyErr error
	alloc := allocated(func() { applyErr = tr.Apply(m, nil) })
	if !errors.Is(applyErr, transform.ErrByteBudget) {
		t.Fatalf("Apply: got %v, want the byte budget error", applyErr)
	}
	if len(m) != 0 {
		t.Errorf("the message got %d keys, want none", len(m))
	}
	if alloc > 2*transform.MaxEvalBytes {
		t.Errorf("Apply allocated %d MB, want at most %d MB", alloc>>20, 2*transform.MaxEvalBytes>>20)
	}
}

// String scans and regular expression matches are charged before they
// run: one matches call with a large pattern on a long string would run
// for tens of seconds, beyond any clock check.
func TestScansChargedBeforeTheyRun(t *testing.T) {
	defer transform.SetEvalTimeLimit(time.Hour)() // the cost budget must refuse it, not the clock
	mib := strings.Repeat("a", 1<<20)
	tests := []struct {
		name   string
		expr   string
		wantIs error
	}{
		{"constant pattern", `message.s matches "[a-q][^u-z]{500}x"`, transform.ErrCostBudget},
		{"pattern from the message", `message.s matches message.p`, transform.ErrCostBudget},
		{"pattern too large at run time", `message.s matches message.big`, transform.ErrLimit},
		{"matches in a loop", `count(1..100, message.s matches "a+b")`, transform.ErrCostBudget},
		{"contains in a loop", `count(1..100, message.s contains "b")`, transform.ErrCostBudget},
		{"indexOf in a loop", `sum(1..100, indexOf(message.s, "b"))`, transform.ErrCostBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message.Message{"s": mib, "p": "[a-q][^u-z]{500}x", "big": "[a-q][^u-z]{1000}x"}
			err := transform.Apply(m, map[string]any{"x": transform.SpecialPrefix + tt.expr}, nil)
			if !errors.Is(err, tt.wantIs) || !errors.Is(err, transform.ErrLimit) {
				t.Fatalf("Apply(%s): got %v, want errors.Is %v", tt.expr, err, tt.wantIs)
			}
			if _, ok := m["x"]; ok {
				t.Errorf("key x set to %v, want it unset", m["x"])
			}
		})
	}
	// A constant pattern too large does not compile.
	_, err := transform.Compile(map[string]any{"x": ` specials/message.s matches "[a-q][^u-z]{1000}x"`})
	if !errors.Is(err, transform.ErrLimit) || !strings.Contains(err.Error(), "instructions, at most 1000") {
		t.Errorf("Compile of a large pattern: got %v, want the pattern size limit", err)
	}
	// Ordinary use is unaffected.
	m := message.Message{"s": "web12.example.com"}
	err = transform.Apply(m, map[string]any{
		"a": ` specials/message.s matches "^web[0-9]+\\."`,
		"b": ` specials/message.s matches message.s`,
		"c": ` specials/message.s contains "example"`,
		"d": ` specials/message.nope matches "x"`,
		"e": ` specials/indexOf(message.s, ".")`,
	}, nil)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := map[string]any{"a": true, "b": true, "c": true, "d": false, "e": int64(5)}
	for k, v := range want {
		if !jsonEqual(m[k], v) {
			t.Errorf("key %s: got %#v, want %#v", k, m[k], v)
		}
	}
}
