package transform_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name      string
		msg       message.Message
		tr        map[string]any
		captures  map[string]string
		want      message.Message
		wantErrIn []string // substrings the error must contain; nil: no error
	}{
		{
			name: "literal scalars of every kind",
			msg:  message.Message{"a": "b"},
			tr:   map[string]any{"s": "x", "i": 7, "f": 1.5, "t": true, "n": nil},
			want: message.Message{"a": "b", "s": "x", "i": int64(7), "f": 1.5, "t": true, "n": nil},
		},
		{
			name: "nested ' specials/' strings are literal",
			msg:  message.Message{},
			tr:   map[string]any{"m": map[string]any{"k": " specials/message.a"}, "l": []any{" specials/1"}},
			want: message.Message{"m": map[string]any{"k": " specials/message.a"}, "l": []any{" specials/1"}},
		},
		{
			name: "' specials' without the slash is literal",
			msg:  message.Message{},
			tr:   map[string]any{"x": " specials", "y": "specials/1"},
			want: message.Message{"x": " specials", "y": "specials/1"},
		},
		{
			name: "integer result becomes int64",
			msg:  message.Message{"n": int64(2)},
			tr:   map[string]any{"x": " specials/message.n * 21"},
			want: message.Message{"n": int64(2), "x": int64(42)},
		},
		{
			name: "float result stays float64",
			msg:  message.Message{},
			tr:   map[string]any{"x": " specials/1.25 * 2"},
			want: message.Message{"x": 2.5},
		},
		{
			name: "bool and null results",
			msg:  message.Message{"a": "b"},
			tr:   map[string]any{"t": ` specials/message.a == "b"`, "n": " specials/message.missing"},
			want: message.Message{"a": "b", "t": true, "n": nil},
		},
		{
			name: "list result is normalized",
			msg:  message.Message{},
			tr:   map[string]any{"x": " specials/1..3"},
			want: message.Message{"x": []any{int64(1), int64(2), int64(3)}},
		},
		{
			name: "map result",
			msg:  message.Message{"h": "web1"},
			tr:   map[string]any{"x": ` specials/{"host": message.h, "n": 1}`},
			want: message.Message{"h": "web1", "x": map[string]any{"host": "web1", "n": int64(1)}},
		},
		{
			name:     "captures in scope",
			msg:      message.Message{},
			tr:       map[string]any{"x": ` specials/"host-" + captures.host`},
			captures: map[string]string{"host": "web1"},
			want:     message.Message{"x": "host-web1"},
		},
		{
			name: "nil captures are an empty map",
			msg:  message.Message{},
			tr:   map[string]any{"x": " specials/len(captures)", "y": " specials/captures.none"},
			want: message.Message{"x": int64(0), "y": ""},
		},
		{
			name: "every special sees the message before the transform",
			msg:  message.Message{"a": int64(1), "b": int64(2)},
			tr:   map[string]any{"a": " specials/message.b", "b": " specials/message.a"},
			want: message.Message{"a": int64(2), "b": int64(1)},
		},
		{
			name:      "run-time failure leaves the key unset and names key and expression",
			msg:       message.Message{"a": "b", "x": "old"},
			tr:        map[string]any{"x": " specials/message.nope.deeper", "y": "kept"},
			want:      message.Message{"a": "b", "x": "old", "y": "kept"},
			wantErrIn: []string{`transform: key "x": special "message.nope.deeper":`, "cannot fetch deeper"},
		},
		{
			name:      "every failing key is reported",
			msg:       message.Message{},
			tr:        map[string]any{"x": " specials/message.a.b", "y": " specials/message.c.d", "z": 1},
			want:      message.Message{"z": int64(1)},
			wantErrIn: []string{`key "x"`, `key "y"`, `"message.a.b"`, `"message.c.d"`},
		},
		{
			name:      "a result that is not JSON is an error",
			msg:       message.Message{},
			tr:        map[string]any{"x": " specials/now()", "y": " specials/0.0 / 0.0"},
			want:      message.Message{},
			wantErrIn: []string{`key "x"`, "time.Time", `key "y"`, "NaN"},
		},
		{
			name:      "a result with non-string keys is an error",
			msg:       message.Message{},
			tr:        map[string]any{"x": " specials/groupBy(1..4, # % 2)"},
			want:      message.Message{},
			wantErrIn: []string{`key "x"`, "map keys must be strings"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := transform.Compile(tt.tr)
			if err != nil {
				t.Fatalf("Compile: got error %v, want none", err)
			}
			m := tt.msg.Copy()
			err = tr.Apply(m, tt.captures)
			checkErr(t, err, tt.wantErrIn)
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("message: got %#v, want %#v", m, tt.want)
			}
		})
	}
}

// checkErr fails unless err contains every one of want (or, with want
// nil, err is nil).
func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("error: got %v, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("error: got none, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error: got %q, want it to contain %q", err, w)
		}
	}
}

func TestApplyNoAliasing(t *testing.T) {
	tests := []struct {
		name   string
		tr     map[string]any
		mutate func(m message.Message) // changes what the transform set
	}{
		{
			name:   "literal map",
			tr:     map[string]any{"x": map[string]any{"k": []any{"v"}}},
			mutate: func(m message.Message) { m["x"].(map[string]any)["k"].([]any)[0] = "changed" },
		},
		{
			name:   "literal list",
			tr:     map[string]any{"x": []any{map[string]any{"k": "v"}}},
			mutate: func(m message.Message) { m["x"].([]any)[0].(map[string]any)["k"] = "changed" },
		},
		{
			name:   "special returning a list of the message",
			tr:     map[string]any{"x": " specials/message.l"},
			mutate: func(m message.Message) { m["x"].([]any)[0] = "changed" },
		},
		{
			name:   "special returning a map of the message",
			tr:     map[string]any{"x": " specials/message.m"},
			mutate: func(m message.Message) { m["x"].(map[string]any)["k"] = "changed" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := transform.MustCompile(tt.tr)
			orig := message.Message{"l": []any{"a"}, "m": map[string]any{"k": "v"}}
			m1, m2 := orig.Copy(), orig.Copy()
			for _, m := range []message.Message{m1, m2} {
				if err := tr.Apply(m, nil); err != nil {
					t.Fatalf("Apply: %v", err)
				}
			}
			want := m2.Copy()
			tt.mutate(m1)
			if !reflect.DeepEqual(m2, want) {
				t.Errorf("second message after mutating the first: got %#v, want %#v", m2, want)
			}
			if !reflect.DeepEqual(m1["l"], orig["l"]) || !reflect.DeepEqual(m1["m"], orig["m"]) {
				t.Errorf("message's own values after mutating the transformed key: got l=%#v m=%#v, want %#v %#v",
					m1["l"], m1["m"], orig["l"], orig["m"])
			}
			m3 := orig.Copy()
			if err := tr.Apply(m3, nil); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !reflect.DeepEqual(m3, want) {
				t.Errorf("a third Apply after mutations: got %#v, want %#v", m3, want)
			}
		})
	}
}

func TestCompileCopiesTheTransform(t *testing.T) {
	src := map[string]any{"x": map[string]any{"k": "v"}, "y": []any{"a"}}
	tr := transform.MustCompile(src)
	src["x"].(map[string]any)["k"] = "changed"
	src["y"].([]any)[0] = "changed"
	src["z"] = "added"

	m := message.Message{}
	if err := tr.Apply(m, nil); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := message.Message{"x": map[string]any{"k": "v"}, "y": []any{"a"}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got %#v, want %#v", m, want)
	}
}

func TestSpecialsDoNotChangeTheMessage(t *testing.T) {
	exprs := []string{
		"sort(message.l)",
		"reverse(message.l)",
		"sortBy(message.l, -#)",
		"map(message.l, # * 2)",
		"filter(message.l, # > 1)",
		"keys(message.m)",
		"toPairs(message.m)",
		"flatten([message.l, message.l])",
		"concat(message.l, [9])",
	}
	for _, e := range exprs {
		t.Run(e, func(t *testing.T) {
			m := message.Message{"l": []any{int64(3), int64(1), int64(2)}, "m": map[string]any{"b": int64(1), "a": int64(2)}}
			want := m.Copy()
			if err := transform.Apply(m, map[string]any{"out": transform.SpecialPrefix + e}, nil); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			delete(m, "out")
			if !reflect.DeepEqual(m, want) {
				t.Errorf("message after %s: got %#v, want %#v", e, m, want)
			}
		})
	}
}

func TestApplyEdgeCases(t *testing.T) {
	t.Run("nil message", func(t *testing.T) {
		err := transform.MustCompile(map[string]any{"x": 1}).Apply(nil, nil)
		if !errors.Is(err, transform.ErrNilMessage) {
			t.Errorf("got %v, want ErrNilMessage", err)
		}
	})
	t.Run("nil message with empty transform", func(t *testing.T) {
		if err := transform.MustCompile(nil).Apply(nil, nil); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("nil Transform changes nothing", func(t *testing.T) {
		var tr *transform.Transform
		m := message.Message{"a": "b"}
		if err := tr.Apply(m, nil); err != nil {
			t.Errorf("got %v, want nil", err)
		}
		if want := (message.Message{"a": "b"}); !reflect.DeepEqual(m, want) {
			t.Errorf("got %#v, want %#v", m, want)
		}
		if tr.Len() != 0 || tr.HasSpecials() {
			t.Errorf("nil Transform: got Len %d HasSpecials %v, want 0 false", tr.Len(), tr.HasSpecials())
		}
	})
	t.Run("Len and HasSpecials", func(t *testing.T) {
		tr := transform.MustCompile(map[string]any{"a": 1, "b": " specials/1"})
		if tr.Len() != 2 || !tr.HasSpecials() {
			t.Errorf("got Len %d HasSpecials %v, want 2 true", tr.Len(), tr.HasSpecials())
		}
		if transform.MustCompile(map[string]any{"a": 1}).HasSpecials() {
			t.Errorf("literal transform: got HasSpecials true, want false")
		}
	})
	t.Run("many specials", func(t *testing.T) {
		tr := map[string]any{}
		want := message.Message{"n": int64(1)}
		for i := range 20 {
			k := string(rune('a' + i))
			tr[k] = " specials/message.n + " + string(rune('0'+i%10))
			want[k] = int64(1 + i%10)
		}
		m := message.Message{"n": int64(1)}
		if err := transform.Apply(m, tr, nil); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("got %#v, want %#v", m, want)
		}
	})
	t.Run("Apply convenience reports compile errors", func(t *testing.T) {
		m := message.Message{}
		err := transform.Apply(m, map[string]any{"x": " specials/(", "y": 1}, nil)
		checkErr(t, err, []string{`transform: key "x": special:`})
		if len(m) != 0 {
			t.Errorf("message after a failed compile: got %#v, want it untouched", m)
		}
	})
}

func TestMustCompilePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("MustCompile of a bad transform: got no panic, want one")
		}
	}()
	transform.MustCompile(map[string]any{"x": " specials/("})
}

func TestConcurrentApply(t *testing.T) {
	// Eight goroutines on a loaded machine (and under the race detector)
	// may be off the CPU for longer than the time limit between two steps
	// of one application: this test is about concurrency, not the clock.
	defer transform.SetEvalTimeLimit(time.Minute)()
	tr := transform.MustCompile(map[string]any{
		"host":  ` specials/"host-" + captures.n`,
		"twice": " specials/message.n * 2",
		"list":  " specials/map(message.l, # + message.n)",
		"lit":   map[string]any{"k": []any{"v"}},
	})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := int64(g*1000 + i)
				m := message.Message{"n": n, "l": []any{int64(1), int64(2)}}
				if err := tr.Apply(m, map[string]string{"n": "x"}); err != nil {
					errs <- err
					return
				}
				want := message.Message{
					"n": n, "l": []any{int64(1), int64(2)},
					"host": "host-x", "twice": 2 * n, "list": []any{n + 1, n + 2},
					"lit": map[string]any{"k": []any{"v"}},
				}
				if !reflect.DeepEqual(m, want) {
					errs <- errors.New("got a message that differs from the expected one")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestConcurrentCompile(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				tr, err := transform.Compile(map[string]any{
					"x": ` specials/concat(map(message.l, # + message.n), [len(captures)])`,
					"y": ` specials/"v" + string(message.n)`,
				})
				if err != nil {
					errs <- err
					return
				}
				m := message.Message{"n": int64(g), "l": []any{int64(i)}}
				if err := tr.Apply(m, nil); err != nil {
					errs <- err
					return
				}
				if want := []any{int64(i + g), int64(0)}; !reflect.DeepEqual(m["x"], want) {
					errs <- fmt.Errorf("x: got %#v, want %#v", m["x"], want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
