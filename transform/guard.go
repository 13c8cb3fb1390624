package transform

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"regexp/syntax"
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
//     versions that charge the size of what they are about to build to the
//     application's byte budget (MaxEvalBytes) before building it, then
//     call expr's own implementation;
//   - matches, contains and the functions that scan strings go through
//     guarded versions that charge the work they are about to do (the
//     bytes scanned, times the size of the compiled regular expression
//     for matches) to the application's cost budget (MaxEvalCost) before
//     doing it. One call of a built-in cannot be interrupted, so it must
//     be refused before it starts: `message.s matches "[a-q][^u-z]{1000}x"`
//     on a 1 MiB string would scan for half a minute.
//
// The budgets belong to one application of a transform (Transform.Apply):
// every expression of the transform draws on them, and so do the results
// and the literal values the application sets.
//
// The guards use names users cannot write (they start with "$mm_"), so an
// expression cannot reach or forge them.

// ErrLimit is wrapped by every error about a transform that broke one of
// its limits: too large or too many expressions (Compile), a budget or
// the time limit (Apply). The Router dead-letters a message whose
// transform fails with it, instead of routing it on.
var ErrLimit = errors.New("transform limit exceeded")

// limitError is an error that is also ErrLimit.
type limitError struct{ text string }

func (e *limitError) Error() string        { return e.text }
func (e *limitError) Is(target error) bool { return target == ErrLimit }

// ErrTimeLimit is wrapped by the error of an application whose loops or
// expensive built-ins ran longer than MaxEvalTime. It is an ErrLimit.
var ErrTimeLimit error = &limitError{"time limit exceeded"}

// ErrByteBudget is wrapped by the error of an application that tried to
// build more than MaxEvalBytes. It is an ErrLimit.
var ErrByteBudget error = &limitError{"byte budget exceeded"}

// ErrCostBudget is wrapped by the error of an application whose string
// scans and regular expression matches would do more than MaxEvalCost
// units of work. It is an ErrLimit.
var ErrCostBudget error = &limitError{"cost budget exceeded"}

const (
	varBudget   = "$mm_budget" // the *budget of the running evaluation
	fnTick      = "$mm_tick"
	fnAdd       = "$mm_add"
	fnMatches   = "$mm_matches"
	fnContains  = "$mm_contains"
	guardPrefix = "$mm_"
)

// budget is what one application of a transform has used. It has no
// exported methods, so an expression that gets hold of it (through $env)
// can do nothing with it.
type budget struct {
	bytes    int
	cost     int
	ticks    uint
	deadline time.Time // zero until the first loop iteration or expensive call
}

func (b *budget) reset() { *b = budget{} }

func (b *budget) charge(n int) error {
	if n < 0 || n > MaxEvalBytes-b.bytes {
		return fmt.Errorf("%w: would build more than %d bytes", ErrByteBudget, MaxEvalBytes)
	}
	b.bytes += n
	return nil
}

// clockCost is the cost from which one call reads the clock: cheaper
// calls are checked by the cost budget alone.
const clockCost = 1 << 16

// chargeCost charges n units of work (about one byte scanned by a
// one-instruction program each) before they are done.
func (b *budget) chargeCost(n int) error {
	if n < 0 || n > MaxEvalCost-b.cost {
		return fmt.Errorf("%w: would scan more than %d units (bytes scanned times the size of the pattern)", ErrCostBudget, MaxEvalCost)
	}
	b.cost += n
	if n >= clockCost {
		return b.checkClock()
	}
	return nil
}

// evalTimeLimit is MaxEvalTime; tests of the other budgets raise it so
// that a slow machine cannot trip the clock before the budget under test.
var evalTimeLimit = func() *atomic.Int64 {
	var v atomic.Int64
	v.Store(int64(MaxEvalTime))
	return &v
}()

// tick counts one loop iteration. It reads the clock at each of the first
// 16 iterations (the first starts the clock), then at every 16th.
func (b *budget) tick() error {
	b.ticks++
	if b.ticks > 16 && b.ticks&15 != 1 {
		return nil
	}
	return b.checkClock()
}

// checkClock starts the clock at its first call and fails once
// MaxEvalTime has passed since.
func (b *budget) checkClock() error {
	now := time.Now()
	limit := time.Duration(evalTimeLimit.Load())
	if b.deadline.IsZero() {
		b.deadline = now.Add(limit)
		return nil
	}
	if now.After(b.deadline) {
		return fmt.Errorf("%w: ran longer than %s", ErrTimeLimit, limit)
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

// scanned lists the builtins that scan their string argument, with the
// cost each charges (one unit per byte scanned).
var scanned = map[string]estimator{
	"indexOf":     scanFirst,
	"lastIndexOf": scanFirst,
	"trim":        scanFirst,
	"upper":       scanFirst,
	"lower":       scanFirst,
	"split":       scanFirst,
	"splitAfter":  scanFirst,
	"replace":     scanFirst,
	"toBase64":    scanFirst,
	"fromBase64":  scanFirst,
	"fromJSON":    scanFirst,
}

func scanFirst(a []any) int { return strLen(a, 0) + 1 }

// guardOptions compile the program that actually runs, together with a
// fresh guard patch (compileSpecial adds it).
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
		expr.Function(fnMatches, guardMatches),
		expr.Function(fnContains, guardContains),
	}
	names := map[string]bool{}
	for name := range guarded {
		names[name] = true
	}
	for name := range scanned {
		names[name] = true
	}
	for name := range names {
		opts = append(opts, expr.Function(guardPrefix+name, guardBuiltin(name, guarded[name], scanned[name])))
	}
	return opts
}()

// guard is the syntax-tree patch described at the top of this file. It
// records the first expression it refuses (a regular expression too large
// to run) in err.
type guard struct{ err error }

func (g *guard) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.PredicateNode:
		body := n.Node
		call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fnTick}, Arguments: []ast.Node{budgetNode(), body}}
		call.SetLocation(body.Location())
		n.Node = call
	case *ast.BinaryNode:
		switch n.Operator {
		case "+":
			if isNumber(n.Left) && isNumber(n.Right) || isConstString(n.Left) && isConstString(n.Right) {
				return
			}
			ast.Patch(node, &ast.CallNode{
				Callee:    &ast.IdentifierNode{Value: fnAdd},
				Arguments: []ast.Node{budgetNode(), n.Left, n.Right},
			})
		case "matches":
			pattern := n.Right
			if s, ok := n.Right.(*ast.StringNode); ok {
				// Compiled once, here; the size limit is a compile error.
				re, err := compileRegex(s.Value)
				if err != nil {
					if g.err == nil {
						g.err = err
					}
					return
				}
				pattern = &ast.ConstantNode{Value: re}
			}
			ast.Patch(node, &ast.CallNode{
				Callee:    &ast.IdentifierNode{Value: fnMatches},
				Arguments: []ast.Node{budgetNode(), n.Left, pattern},
			})
		case "contains":
			ast.Patch(node, &ast.CallNode{
				Callee:    &ast.IdentifierNode{Value: fnContains},
				Arguments: []ast.Node{budgetNode(), n.Left, n.Right},
			})
		}
	case *ast.BuiltinNode:
		_, g1 := guarded[n.Name]
		_, g2 := scanned[n.Name]
		if !g1 && !g2 {
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

// regex is a compiled regular expression with its size.
type regex struct {
	re    *regexp.Regexp
	insts int // instructions of its program
}

// compileRegex compiles a pattern of matches, refusing one whose program
// has more than MaxRegexInsts instructions. Its error is an ErrLimit for
// a pattern too large, and as regexp's for a bad one.
func compileRegex(pattern string) (*regex, error) {
	parsed, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, err
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil, err
	}
	if len(prog.Inst) > MaxRegexInsts {
		return nil, fmt.Errorf("%w: regular expression %.40q compiles to %d instructions, at most %d are allowed",
			ErrLimit, pattern, len(prog.Inst), MaxRegexInsts)
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	return &regex{re: re, insts: len(prog.Inst)}, nil
}

// guardMatches is `s matches pattern`: it charges len(s) times the size of
// the pattern's program, then matches. A pattern that is not a constant
// is compiled per call (its compilation charged by its length).
func guardMatches(args ...any) (any, error) {
	b, rest, err := budgetArg(args)
	if err != nil {
		return nil, err
	}
	if len(rest) != 2 || rest[0] == nil || rest[1] == nil {
		return false, nil // expr: nil never matches
	}
	s, ok := rest[0].(string)
	if !ok {
		return nil, fmt.Errorf("matches: want a string on the left, got %T", rest[0])
	}
	var re *regex
	switch p := rest[1].(type) {
	case *regex:
		re = p
	case string:
		if err := b.chargeCost(len(p) + 1); err != nil {
			return nil, fmt.Errorf("matches: %w", err)
		}
		if re, err = compileRegex(p); err != nil {
			return nil, fmt.Errorf("matches: %w", err)
		}
	default:
		return nil, fmt.Errorf("matches: want a string pattern, got %T", rest[1])
	}
	if len(s)+1 > MaxEvalCost/re.insts {
		return nil, fmt.Errorf("matches: %w: would scan more than %d units (%d bytes times a pattern of %d instructions)",
			ErrCostBudget, MaxEvalCost, len(s), re.insts)
	}
	if err := b.chargeCost((len(s) + 1) * re.insts); err != nil {
		return nil, fmt.Errorf("matches: %w", err)
	}
	return re.re.MatchString(s), nil
}

// guardContains is `a contains b`.
func guardContains(args ...any) (any, error) {
	b, rest, err := budgetArg(args)
	if err != nil {
		return nil, err
	}
	if len(rest) != 2 || rest[0] == nil || rest[1] == nil {
		return false, nil // as expr: nil contains nothing
	}
	x, ok1 := rest[0].(string)
	y, ok2 := rest[1].(string)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("contains: want strings, got %T and %T", rest[0], rest[1])
	}
	if err := b.chargeCost(len(x) + len(y) + 1); err != nil {
		return nil, fmt.Errorf("contains: %w", err)
	}
	return strings.Contains(x, y), nil
}

// guardBuiltin returns the guarded version of builtin name: charge the
// bytes it builds (est) and the work it does (cost), then call expr's
// implementation.
func guardBuiltin(name string, est, cost estimator) func(args ...any) (any, error) {
	fn := builtin.Builtins[builtin.Index[name]]
	return func(args ...any) (any, error) {
		b, rest, err := budgetArg(args)
		if err != nil {
			return nil, err
		}
		if est != nil {
			if err := b.charge(est(rest)); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		if cost != nil {
			if err := b.chargeCost(cost(rest)); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
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
