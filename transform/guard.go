package transform

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm/runtime"
)

// expr bounds what an evaluation allocates only for ranges, list and map
// literals and a few functions, and not time at all. An expression could
// otherwise exhaust memory in one call (repeat("x", 999999) of a long
// string, join or toJSON of a list holding the same long string many
// times, + doubling a string in reduce) or loop for hours (nested count
// over a message list). So every special is compiled twice: once as
// written, to check it, then with the syntax tree patched so that
//
//   - every loop body (the predicate of map, filter, reduce, all, count, …)
//     passes through tick, which fails the evaluation after MaxEvalTime;
//   - + and the functions that can build large values go through guarded
//     versions that charge the size of what they are about to build to a
//     per-evaluation byte budget (MaxEvalBytes) before building it, then
//     call expr's own implementation.
//
// The guards use names users cannot write (they start with "$mm_"), so an
// expression cannot reach or forge them.

// ErrTimeLimit is wrapped by the error of an evaluation whose loops ran
// longer than MaxEvalTime.
var ErrTimeLimit = errors.New("time limit exceeded")

// ErrByteBudget is wrapped by the error of an evaluation that tried to
// build more than MaxEvalBytes.
var ErrByteBudget = errors.New("byte budget exceeded")

const (
	varBudget   = "$mm_budget" // the *budget of the running evaluation
	fnTick      = "$mm_tick"
	fnAdd       = "$mm_add"
	guardPrefix = "$mm_"
)

// budget is what one evaluation has used. It has no exported methods, so
// an expression that gets hold of it (through $env) can do nothing with
// it.
type budget struct {
	bytes    int
	ticks    uint
	deadline time.Time // zero until the first loop iteration
}

func (b *budget) reset() { *b = budget{} }

func (b *budget) charge(n int) error {
	if n < 0 || n > MaxEvalBytes-b.bytes {
		return fmt.Errorf("%w: would build more than %d bytes", ErrByteBudget, MaxEvalBytes)
	}
	b.bytes += n
	return nil
}

// evalTimeLimit is MaxEvalTime; tests of the other budgets raise it so
// that a slow machine cannot trip the clock before the budget under test.
var evalTimeLimit = func() *atomic.Int64 {
	var v atomic.Int64
	v.Store(int64(MaxEvalTime))
	return &v
}()

// tick counts one loop iteration; it reads the clock only every 16th.
func (b *budget) tick() error {
	b.ticks++
	if b.ticks&15 != 1 {
		return nil
	}
	now := time.Now()
	limit := time.Duration(evalTimeLimit.Load())
	if b.deadline.IsZero() {
		b.deadline = now.Add(limit)
		return nil
	}
	if now.After(b.deadline) {
		return fmt.Errorf("%w: loops ran longer than %s", ErrTimeLimit, limit)
	}
	return nil
}

// estimator returns how many bytes a builtin is about to build from args.
type estimator func(args []any) int

// guarded lists the builtins whose result can be much larger than their
// arguments, or that walk nested lists in full, with the size each
// charges.
var guarded = map[string]estimator{
	"repeat":     estimateRepeat,
	"replace":    estimateReplace,
	"join":       estimateJoin,
	"toJSON":     measureFirst,
	"string":     measureFirst,
	"flatten":    measureFirst,
	"max":        measureAll,
	"min":        measureAll,
	"mean":       measureAll,
	"median":     measureAll,
	"upper":      func(a []any) int { return 2 * strLen(a, 0) },
	"lower":      func(a []any) int { return 2 * strLen(a, 0) },
	"toBase64":   func(a []any) int { return (strLen(a, 0) + 2) / 3 * 4 },
	"fromBase64": func(a []any) int { return strLen(a, 0) },
	"fromJSON":   func(a []any) int { return 4 * strLen(a, 0) },
	"split":      estimateSplit,
	"splitAfter": estimateSplit,
	"keys":       shallowAll,
	"values":     shallowAll,
	"toPairs":    func(a []any) int { return 3 * shallowAll(a) },
	"fromPairs":  shallowAll,
	"uniq":       shallowAll,
	"concat":     shallowAll,
	"sort":       shallowAll,
	"reverse":    shallowAll,
	"take":       shallowAll,
}

// guardOptions compile the program that actually runs.
var guardOptions = func() []expr.Option {
	opts := []expr.Option{
		expr.Env(map[string]any{
			varMessage:  map[string]any{},
			varCaptures: map[string]string{},
			varBudget:   (*budget)(nil),
		}),
		expr.MaxNodes(MaxNodes),
		expr.Function(fnTick, guardTick),
		expr.Function(fnAdd, guardAdd),
		expr.Patch(guard{}),
	}
	for name, est := range guarded {
		opts = append(opts, expr.Function(guardPrefix+name, guardBuiltin(name, est)))
	}
	return opts
}()

// guard is the syntax-tree patch described at the top of this file.
type guard struct{}

func (guard) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.PredicateNode:
		body := n.Node
		call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fnTick}, Arguments: []ast.Node{budgetNode(), body}}
		call.SetLocation(body.Location())
		n.Node = call
	case *ast.BinaryNode:
		if n.Operator != "+" || isNumber(n.Left) && isNumber(n.Right) || isConstString(n.Left) && isConstString(n.Right) {
			return
		}
		ast.Patch(node, &ast.CallNode{
			Callee:    &ast.IdentifierNode{Value: fnAdd},
			Arguments: []ast.Node{budgetNode(), n.Left, n.Right},
		})
	case *ast.BuiltinNode:
		if _, ok := guarded[n.Name]; !ok {
			return
		}
		ast.Patch(node, &ast.CallNode{
			Callee:    &ast.IdentifierNode{Value: guardPrefix + n.Name},
			Arguments: append([]ast.Node{budgetNode()}, n.Arguments...),
		})
	}
}

func budgetNode() ast.Node { return &ast.IdentifierNode{Value: varBudget} }

func isNumber(n ast.Node) bool {
	t := n.Type()
	if t == nil {
		return false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func isConstString(n ast.Node) bool {
	_, ok := n.(*ast.StringNode)
	return ok
}

func budgetArg(args []any) (*budget, []any, error) {
	if len(args) > 0 {
		if b, ok := args[0].(*budget); ok && b != nil {
			return b, args[1:], nil
		}
	}
	return nil, nil, errors.New("internal error: guard called without its budget")
}

func guardTick(args ...any) (any, error) {
	b, rest, err := budgetArg(args)
	if err != nil {
		return nil, err
	}
	if err := b.tick(); err != nil {
		return nil, err
	}
	return rest[0], nil
}

func guardAdd(args ...any) (any, error) {
	b, rest, err := budgetArg(args)
	if err != nil {
		return nil, err
	}
	x, y := rest[0], rest[1]
	if xs, ok := x.(string); ok {
		if ys, ok := y.(string); ok {
			if err := b.charge(len(xs) + len(ys)); err != nil {
				return nil, err
			}
			return xs + ys, nil
		}
	}
	return runtime.Add(x, y), nil // panics on bad operands, as expr's own + does
}

// guardBuiltin returns the guarded version of builtin name: charge, then
// call expr's implementation.
func guardBuiltin(name string, est estimator) func(args ...any) (any, error) {
	fn := builtin.Builtins[builtin.Index[name]]
	return func(args ...any) (any, error) {
		b, rest, err := budgetArg(args)
		if err != nil {
			return nil, err
		}
		if err := b.charge(est(rest)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		switch {
		case fn.Fast != nil:
			if len(rest) != 1 {
				return nil, fmt.Errorf("%s: want 1 argument, got %d", name, len(rest))
			}
			return fn.Fast(rest[0]), nil
		case fn.Func != nil:
			return fn.Func(rest...)
		case fn.Safe != nil:
			out, _, err := fn.Safe(rest...)
			return out, err
		}
		return nil, fmt.Errorf("internal error: builtin %s has no implementation", name)
	}
}

// over is what estimators return for sizes that do not fit an int.
const over = math.MaxInt

func strLen(args []any, i int) int {
	if i < len(args) {
		if s, ok := args[i].(string); ok {
			return len(s)
		}
	}
	return 0
}

func intArg(args []any, i int) (int, bool) {
	if i >= len(args) {
		return 0, false
	}
	switch n := args[i].(type) {
	case int:
		return n, true
	case int64:
		if n > math.MaxInt32 {
			return math.MaxInt32, true
		}
		return int(n), true
	}
	return 0, false
}

func estimateRepeat(args []any) int {
	s := strLen(args, 0)
	n, ok := intArg(args, 1)
	if !ok || n <= 0 || s == 0 {
		return 0
	}
	if n > over/s {
		return over
	}
	return s * n
}

func estimateReplace(args []any) int {
	if len(args) < 3 {
		return 0
	}
	s, _ := args[0].(string)
	old, _ := args[1].(string)
	repl, _ := args[2].(string)
	var count int
	if old == "" {
		count = utf8.RuneCountInString(s) + 1
	} else {
		count = strings.Count(s, old)
	}
	if n, ok := intArg(args, 3); ok && n >= 0 && n < count {
		count = n
	}
	grow := len(repl) - len(old)
	if grow <= 0 || count == 0 {
		return len(s)
	}
	if count > (over-len(s))/grow {
		return over
	}
	return len(s) + count*grow
}

func estimateJoin(args []any) int {
	if len(args) == 0 {
		return 0
	}
	sep := strLen(args, 1)
	total := 0
	add := func(n int) {
		if total > over-n-sep {
			total = over
			return
		}
		total += n + sep
	}
	switch l := args[0].(type) {
	case []any:
		for _, e := range l {
			if s, ok := e.(string); ok {
				add(len(s))
			}
		}
	case []string:
		for _, s := range l {
			add(len(s))
		}
	}
	return total
}

func estimateSplit(args []any) int {
	const header = 16 // bytes per string in the result list
	s, _ := safeIndex(args, 0).(string)
	sep, _ := safeIndex(args, 1).(string)
	var count int
	if sep == "" {
		count = utf8.RuneCountInString(s)
	} else {
		count = strings.Count(s, sep) + 1
	}
	if n, ok := intArg(args, 2); ok && n >= 0 && n < count {
		count = n
	}
	return header * count
}

func safeIndex(args []any, i int) any {
	if i < len(args) {
		return args[i]
	}
	return nil
}

// shallowAll charges 16 bytes per element of every list or map argument:
// the functions using it build a new list of (references to) elements.
func shallowAll(args []any) int {
	total := 0
	for _, a := range args {
		switch v := reflect.ValueOf(a); v.Kind() {
		case reflect.Slice, reflect.Array, reflect.Map, reflect.String:
			total += 16 * v.Len()
		}
	}
	return total
}

func measureFirst(args []any) int {
	if len(args) == 0 {
		return 0
	}
	return measure(args[0], 0, MaxEvalBytes)
}

func measureAll(args []any) int {
	total := 0
	for _, a := range args {
		total += measure(a, 0, MaxEvalBytes-total)
		if total > MaxEvalBytes {
			return total
		}
	}
	return total
}

// measure estimates the size of v written as indented JSON at nesting
// depth depth, stopping as soon as it passes limit (it then returns
// something larger than limit). Stopping early matters: a value built by
// an expression can hold the same list many times over (reduce(1..60,
// [#acc, #acc], 1) is tiny in memory and 2^60 elements long when walked),
// and measure's cost must stay proportional to limit.
func measure(v any, depth, limit int) int {
	const scalar = 24 // a number, bool or null, with separators
	if limit < 0 {
		return 1
	}
	indent := 2*depth + 2
	switch t := v.(type) {
	case nil, bool, int, int64, float64:
		return scalar
	case string:
		return len(t) + 4
	case []any:
		total := indent + 2
		for _, e := range t {
			total += indent + measure(e, depth+1, limit-total)
			if total > limit {
				return total
			}
		}
		return total
	case map[string]any:
		total := indent + 2
		for k, e := range t {
			total += indent + len(k) + 4 + measure(e, depth+1, limit-total)
			if total > limit {
				return total
			}
		}
		return total
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		total := indent + 2
		for i := 0; i < rv.Len(); i++ {
			total += indent + measure(rv.Index(i).Interface(), depth+1, limit-total)
			if total > limit {
				return total
			}
		}
		return total
	case reflect.Map:
		total := indent + 2
		iter := rv.MapRange()
		for iter.Next() {
			total += indent + measure(iter.Key().Interface(), depth+1, limit-total) +
				measure(iter.Value().Interface(), depth+1, limit-total)
			if total > limit {
				return total
			}
		}
		return total
	case reflect.String:
		return rv.Len() + 4
	}
	return scalar
}
