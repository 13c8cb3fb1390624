package transform

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/multimodule/multimodule/message"
)

// Limits that keep one expression from taking down the process that
// evaluates it. Transforms can arrive inside messages (a router's
// static_forwards), so expressions are treated as untrusted input. See
// guard.go for how they are enforced.
const (
	// MaxNodes is the largest expression accepted, in syntax-tree nodes;
	// longer expressions fail to compile.
	MaxNodes = 2000

	// MemoryBudget is expr's own allocation budget for one evaluation, in
	// its units: elements of the ranges, lists and maps the expression
	// builds. Exceeding it fails with "memory budget exceeded";
	// `1..1000000000` fails at once.
	MemoryBudget = 1_000_000

	// MaxEvalBytes bounds the bytes one application of a transform may
	// build: what its expressions build with string and list functions (+
	// on strings, repeat, replace, join, toJSON, string, upper, lower,
	// split, flatten, keys, …), plus the size of every value it sets —
	// results of expressions and literals, nested values included —
	// measured as JSON. Exceeding it fails with "byte budget exceeded".
	MaxEvalBytes = 32 << 20

	// MaxEvalCost bounds the work one application of a transform may do
	// scanning strings: matches charges the length of the string times
	// the number of instructions of the pattern's program, contains,
	// indexOf, split, replace, upper, … the length of the string. The
	// charge is made before the call, so a call that would exceed it is
	// refused ("cost budget exceeded") instead of run.
	MaxEvalCost = 16 << 20

	// MaxRegexInsts bounds the size of a regular expression of matches, in
	// instructions of its compiled program (a{1000} is about 1000). A
	// larger constant pattern does not compile; a larger pattern computed
	// at run time fails the application.
	MaxRegexInsts = 1000

	// MaxSpecials is the largest number of expressions one transform may
	// have; a transform with more does not compile.
	MaxSpecials = 32

	// MaxEvalTime bounds how long the expressions of one application may
	// run: loops (map, filter, reduce, all, count, …) and expensive calls
	// read the clock, and fail with "time limit exceeded" after it.
	MaxEvalTime = 100 * time.Millisecond
)

// The variables an expression sees.
const (
	varMessage  = "message"
	varCaptures = "captures"
)

// checkOptions compile an expression exactly as users write it, against
// an environment that declares just the two variables: any other name
// (readFile, env, os, …) is a compile error. Errors users see come from
// this compilation.
var checkOptions = []expr.Option{
	expr.Env(map[string]any{
		varMessage:  map[string]any{},
		varCaptures: map[string]string{},
	}),
	expr.MaxNodes(MaxNodes),
}

// compileSpecial compiles one expression (without the prefix): first as
// written, to report the user's mistakes in the user's terms, then with
// the guards of guard.go patched in; the guarded program is what runs.
func compileSpecial(src string) (prog *vm.Program, err error) {
	// expr is not known to panic while compiling, but a panic here would
	// take down a config load; make it an error instead.
	defer func() {
		if r := recover(); r != nil {
			prog, err = nil, fmt.Errorf("internal error compiling the expression: %v", r)
		}
	}()
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	if _, err := expr.Compile(src, checkOptions...); err != nil {
		return nil, exprErr(err)
	}
	g := &guard{}
	prog, err = expr.Compile(src, append(guardOptions[:len(guardOptions):len(guardOptions)], expr.Patch(g))...)
	if g.err != nil {
		return nil, g.err
	}
	if err != nil {
		// The expression checked fine; a failure here is ours.
		return nil, fmt.Errorf("internal error guarding the expression: %w", exprErr(err))
	}
	return prog, nil
}

// evaluator holds what one Apply needs to run expressions: a reusable
// VM, the environment map and the budget. Pooled, so Apply does not
// allocate them.
type evaluator struct {
	vm     vm.VM
	budget budget
	env    map[string]any
}

var evaluators = sync.Pool{New: func() any {
	ev := &evaluator{env: make(map[string]any, 3)}
	ev.env[varBudget] = &ev.budget
	return ev
}}

// emptyCaptures is what expressions see when the caller has no captures.
// Expressions cannot modify it.
var emptyCaptures = map[string]string{}

func getEvaluator(m message.Message, captures map[string]string) *evaluator {
	ev := evaluators.Get().(*evaluator)
	if captures == nil {
		captures = emptyCaptures
	}
	ev.env[varMessage] = map[string]any(m)
	ev.env[varCaptures] = captures
	ev.vm.MemoryBudget = MemoryBudget
	ev.budget.reset()
	return ev
}

func putEvaluator(ev *evaluator) {
	// Drop references so the pool does not keep messages alive.
	ev.env[varMessage] = nil
	ev.env[varCaptures] = nil
	clear(ev.vm.Stack[:cap(ev.vm.Stack)])
	clear(ev.vm.Variables)
	evaluators.Put(ev)
}

// eval runs one expression and returns its result as an owned canonical
// value: normalized (expr's int becomes int64, []int becomes []any, …) and
// deep-copied, so it never shares a map or list with the message. The
// result's size is charged to the application's byte budget.
func (ev *evaluator) eval(s *special) (any, error) {
	out, err := ev.vm.Run(s.prog, ev.env)
	if err != nil {
		err = exprErr(err)
		if strings.Contains(err.Error(), "memory budget exceeded") {
			// expr's own element budget (a panic inside expr).
			err = &limitError{err.Error()}
		}
		return nil, err
	}
	var size int
	switch t := out.(type) {
	case nil, bool, int, int64, float64:
	case string:
		size = len(t)
	default:
		// Containers may share parts (a list holding the same list twice,
		// nested) and be far larger than they look: measure before walking.
		left := MaxEvalBytes - ev.budget.bytes
		if size = measure(out, 0, left); size > left {
			return nil, fmt.Errorf("%w: the results are larger than %d bytes as JSON", ErrByteBudget, MaxEvalBytes)
		}
	}
	if err := ev.budget.charge(size); err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	owned, err := ownCopy(out, "")
	if err != nil {
		return nil, fmt.Errorf("result is not JSON: %w", err)
	}
	n, err := message.NormalizeValue(owned)
	if err != nil {
		return nil, fmt.Errorf("result is not JSON: %w", err)
	}
	return n, nil
}

// ownCopy deep-copies the lists and maps of an expression's result, so
// the result never shares them with the message (` specials/message.l`
// returns the message's own list), and turns the map[any]any that expr
// builds (fromPairs, groupBy) into map[string]any when every key is a
// string. Other values are left for message.NormalizeValue to convert or
// reject.
func ownCopy(v any, path string) (any, error) {
	switch t := v.(type) {
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			n, err := ownCopy(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			n, err := ownCopy(e, joinPath(path, k))
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				if path == "" {
					path = "(top)"
				}
				return nil, fmt.Errorf("at %q: map keys must be strings, got %T", path, k)
			}
			n, err := ownCopy(e, joinPath(path, ks))
			if err != nil {
				return nil, err
			}
			out[ks] = n
		}
		return out, nil
	}
	return v, nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// exprError is an expr error shown on one line (expr's own message adds a
// multi-line source snippet; our errors already quote the expression).
type exprError struct{ fe *file.Error }

func (e *exprError) Error() string {
	if e.fe.Snippet == "" {
		return e.fe.Message
	}
	return fmt.Sprintf("%s (column %d)", e.fe.Message, e.fe.Column+1)
}

func (e *exprError) Unwrap() error { return e.fe }

func exprErr(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return &exprError{fe: fe}
	}
	return err
}
