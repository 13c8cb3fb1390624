// Package transform applies Message::Transform-style transforms to
// messages.
//
// A transform is a map. Applying it sets, for each of its keys, the
// message's top-level key of the same name to the transform's value: a
// scalar is stored as is, a map or list is deep-copied in whole (the
// transform never merges into an existing map, and no two messages ever
// share a container that came from a transform).
//
// A string value that starts with " specials/" (note the leading space) is
// not stored literally: the rest of the string is an expression in the
// expr-lang language (github.com/expr-lang/expr), evaluated with two
// variables in scope:
//
//	message   the message as it was before this transform (map[string]any)
//	captures  the named regex captures of the route's match (map[string]string,
//	          empty when there are none)
//
// Its result, which may be any JSON value, becomes the key's value. All
// expressions of a transform are evaluated before any key is set, so every
// expression sees the same, untransformed message. A string starting with
// " special" but not " specials/" is an ordinary literal.
//
// Expressions are compiled once, by Compile, and evaluated per message by
// Transform.Apply. An expression that does not compile is a configuration
// error returned by Compile. An expression that fails at run time (or
// returns something that is not JSON) leaves its key unset; the other keys
// are still applied and Apply reports every failure in one error.
//
// Expressions are sandboxed: they see only message and captures, have no
// functions that touch files, the environment, the network or processes,
// and run under limits: a size limit (MaxNodes), at most MaxSpecials
// expressions per transform, patterns of at most MaxRegexInsts
// instructions, expr's element budget (MemoryBudget), and per application
// of a transform (all its keys together) a byte budget checked before
// strings and lists are built and charged for every value set
// (MaxEvalBytes), a cost budget charged before strings are scanned
// (MaxEvalCost) and a time limit (MaxEvalTime). A broken limit is an
// ErrLimit, and the application then sets nothing. See
// docs/expressions.md for the language as users see it.
package transform

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/expr-lang/expr/vm"

	"github.com/multimodule/multimodule/message"
)

// SpecialPrefix marks a transform value that is an expression rather than
// a literal string.
const SpecialPrefix = " specials/"

// ErrNilMessage is returned by Apply when asked to transform a nil
// message (there is no map to set keys in).
var ErrNilMessage = errors.New("transform: nil message")

// Transform is a compiled transform: literal values normalized and owned,
// expressions compiled. It is immutable and safe for concurrent use by
// many goroutines.
type Transform struct {
	entries  []entry // sorted by key, so errors come in a stable order
	specials int     // how many entries are expressions
	literals int     // the size of the literal values, as measure counts it
}

// entry is one key of a transform.
type entry struct {
	key       string
	value     any      // the literal value (canonical types, owned by the Transform)
	container bool     // value is a map or list and must be copied per Apply
	special   *special // non-nil for an expression
}

// special is one compiled " specials/" expression.
type special struct {
	src  string // the expression, without the prefix
	prog *vm.Program
}

// Compile checks and compiles transform t. Literal values are normalized
// to message's canonical types and copied, so later changes to t do not
// affect the result. It fails, naming the key, when a value is not
// JSON-compatible or an expression does not compile:
//
//	transform: key "x": special: unknown name readFile (1:1)
//
// A nil or empty t compiles to a Transform that changes nothing.
func Compile(t map[string]any) (*Transform, error) {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	out := &Transform{entries: make([]entry, 0, len(keys))}
	var errs []error
	for _, k := range keys {
		e, err := compileEntry(k, t[k])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e.special != nil {
			out.specials++
		} else {
			out.literals += literalSize(e.value)
		}
		out.entries = append(out.entries, e)
	}
	if out.specials > MaxSpecials {
		errs = append(errs, fmt.Errorf("transform: %w: %d expressions, at most %d are allowed in one transform", ErrLimit, out.specials, MaxSpecials))
	}
	if out.literals > MaxEvalBytes {
		errs = append(errs, fmt.Errorf("transform: %w: its literal values are larger than %d bytes as JSON", ErrByteBudget, MaxEvalBytes))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// literalSize is a literal's share of the byte budget: as measure counts
// it, capped just above MaxEvalBytes.
func literalSize(v any) int {
	switch t := v.(type) {
	case string:
		return len(t)
	case map[string]any, []any:
		return measure(t, 0, MaxEvalBytes)
	}
	return 0
}

func compileEntry(key string, v any) (entry, error) {
	if s, ok := v.(string); ok && strings.HasPrefix(s, SpecialPrefix) {
		src := s[len(SpecialPrefix):]
		prog, err := compileSpecial(src)
		if err != nil {
			return entry{}, fmt.Errorf("transform: key %q: special: %w", key, err)
		}
		return entry{key: key, special: &special{src: src, prog: prog}}, nil
	}
	n, err := message.NormalizeValue(v)
	if err != nil {
		return entry{}, fmt.Errorf("transform: key %q: %w", key, err)
	}
	e := entry{key: key, value: message.CopyValue(n)}
	switch e.value.(type) {
	case map[string]any, []any:
		e.container = true
	}
	return e, nil
}

// MustCompile is Compile for transforms known to be valid (tests,
// built-in tables); it panics if t does not compile.
func MustCompile(t map[string]any) *Transform {
	c, err := Compile(t)
	if err != nil {
		panic(err)
	}
	return c
}

// Len returns the number of keys the transform sets.
func (t *Transform) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

// HasSpecials reports whether any value of the transform is an
// expression.
func (t *Transform) HasSpecials() bool { return t != nil && t.specials > 0 }

// maxStackSpecials is how many expression results Apply keeps without a
// heap allocation.
const maxStackSpecials = 8

// Apply transforms m in place. captures are the named regex captures of
// the route that matched (nil means none). Every key whose value could be
// computed is set; the error, if any, names each key whose expression
// failed (joined with errors.Join). An application that breaks a limit
// (the error is an ErrLimit) sets no key at all: it stops at the first
// expression that broke it. A nil or empty Transform leaves m untouched;
// a nil m is ErrNilMessage.
func (t *Transform) Apply(m message.Message, captures map[string]string) error {
	if t == nil || len(t.entries) == 0 {
		return nil
	}
	if m == nil {
		return ErrNilMessage
	}

	// Evaluate every expression first, against the untransformed message.
	var (
		buf     [maxStackSpecials]result
		results []result
		errs    []error
	)
	if t.specials > 0 {
		if t.specials <= maxStackSpecials {
			results = buf[:0]
		} else {
			results = make([]result, 0, t.specials)
		}
		ev := getEvaluator(m, captures)
		// The literals this application sets draw on its byte budget too.
		ev.budget.bytes = t.literals
		for i := range t.entries {
			e := &t.entries[i]
			if e.special == nil {
				continue
			}
			v, err := ev.eval(e.special)
			if err != nil {
				err = fmt.Errorf("transform: key %q: special %q: %w", e.key, e.special.src, err)
				if errors.Is(err, ErrLimit) {
					putEvaluator(ev)
					return err
				}
				errs = append(errs, err)
			}
			results = append(results, result{value: v, ok: err == nil})
		}
		putEvaluator(ev)
	}

	// Then set the keys.
	r := 0
	for i := range t.entries {
		e := &t.entries[i]
		switch {
		case e.special != nil:
			if results[r].ok {
				m[e.key] = results[r].value
			}
			r++
		case e.container:
			m[e.key] = message.CopyValue(e.value)
		default:
			m[e.key] = e.value
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// result is the outcome of one expression during Apply.
type result struct {
	value any
	ok    bool
}

// Apply compiles transform t and applies it to m: a convenience for
// one-off transforms. Code that applies the same transform to many
// messages should Compile it once and call Transform.Apply.
func Apply(m message.Message, t map[string]any, captures map[string]string) error {
	c, err := Compile(t)
	if err != nil {
		return err
	}
	return c.Apply(m, captures)
}
