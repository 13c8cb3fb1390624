package match

import (
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A quick is a cheaper evaluation of a regex special whose shape is common
// in routing configs: a literal that must be a prefix, a suffix, a
// substring or the whole text (^Prod, err$, timeout, ^web1$), or a run of
// ASCII characters from one class over the whole text (^x*$, ^[0-9]+$,
// ^\w*$). Such a regex runs as a string comparison or one byte-table
// lookup per byte instead of through the RE2 machinery (^x*$ over 110
// bytes: ~700 ns in regexp, ~40 ns here).
//
// A quick gives exactly the answer regexp.MatchString gives (checked by
// FuzzQuickRegex): literals are whole valid UTF-8 runes without case
// folding, so a byte search finds them where RE2's rune-by-rune search
// does (UTF-8 synchronises on every non-continuation byte); a class run
// accepts only ASCII, and any byte ≥ 0x80 (a non-ASCII rune, or an invalid
// byte that RE2 reads as U+FFFD) is outside every ASCII class. Anything
// else — case-insensitive literals, multi-line anchors, alternations,
// counted repetitions, non-ASCII classes — keeps the compiled regexp.
// Named groups are never extracted by a quick: the caller uses the regexp
// when captures are wanted.
type quick struct {
	kind quickKind
	lit  string     // quickPrefix, quickSuffix, quickContains, quickEqual
	set  *[256]bool // quickRun: the class's bytes (all < 0x80)
	min  int        // quickRun: 0 for *, 1 for +
}

type quickKind uint8

const (
	quickNone     quickKind = iota // no quick form: use the regexp
	quickPrefix                    // ^lit
	quickSuffix                    // lit$
	quickContains                  // lit
	quickEqual                     // ^lit$
	quickRun                       // ^C*$ or ^C+$ with C an ASCII class
)

// match reports whether s matches; only for kind != quickNone.
func (q *quick) match(s string) bool {
	switch q.kind {
	case quickPrefix:
		return strings.HasPrefix(s, q.lit)
	case quickSuffix:
		return strings.HasSuffix(s, q.lit)
	case quickContains:
		return strings.Contains(s, q.lit)
	case quickEqual:
		return s == q.lit
	case quickRun:
		if len(s) < q.min {
			return false
		}
		set := q.set
		for i := 0; i < len(s); i++ {
			if !set[s[i]] {
				return false
			}
		}
		return true
	}
	return false
}

// compileQuick finds the quick form of expr (a regex as regexp.Compile
// took it, flags included), or returns kind quickNone.
func compileQuick(expr string) quick {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return quick{}
	}
	re = unwrap(re.Simplify())
	var parts []*syntax.Regexp
	if re.Op == syntax.OpConcat {
		for _, sub := range re.Sub {
			parts = append(parts, unwrap(sub))
		}
	} else {
		parts = []*syntax.Regexp{re}
	}
	begin := len(parts) > 0 && parts[0].Op == syntax.OpBeginText
	if begin {
		parts = parts[1:]
	}
	end := len(parts) > 0 && parts[len(parts)-1].Op == syntax.OpEndText
	if end {
		parts = parts[:len(parts)-1]
	}
	if len(parts) != 1 {
		return quick{}
	}
	p := parts[0]
	switch p.Op {
	case syntax.OpLiteral:
		lit, ok := literal(p)
		if !ok {
			return quick{}
		}
		switch {
		case begin && end:
			return quick{kind: quickEqual, lit: lit}
		case begin:
			return quick{kind: quickPrefix, lit: lit}
		case end:
			return quick{kind: quickSuffix, lit: lit}
		}
		return quick{kind: quickContains, lit: lit}
	case syntax.OpStar, syntax.OpPlus:
		if !begin || !end || len(p.Sub) != 1 {
			return quick{}
		}
		set, ok := asciiSet(unwrap(p.Sub[0]))
		if !ok {
			return quick{}
		}
		q := quick{kind: quickRun, set: set}
		if p.Op == syntax.OpPlus {
			q.min = 1
		}
		return q
	}
	return quick{}
}

// unwrap removes capturing groups, which do not change whether a regex
// matches.
func unwrap(re *syntax.Regexp) *syntax.Regexp {
	for re.Op == syntax.OpCapture && len(re.Sub) == 1 {
		re = re.Sub[0]
	}
	return re
}

// literal returns the text of a case-sensitive literal of valid runes.
func literal(re *syntax.Regexp) (string, bool) {
	if re.Flags&syntax.FoldCase != 0 || len(re.Rune) == 0 {
		return "", false
	}
	var b strings.Builder
	for _, r := range re.Rune {
		if r == utf8.RuneError || !utf8.ValidRune(r) {
			return "", false
		}
		b.WriteRune(r)
	}
	return b.String(), true
}

// asciiSet returns the bytes of a one-character regex (a character class,
// or a literal rune, case-folded or not) when they are all ASCII.
func asciiSet(re *syntax.Regexp) (*[256]bool, bool) {
	var set [256]bool
	add := func(lo, hi rune) bool {
		if lo < 0 || hi >= utf8.RuneSelf || lo > hi {
			return false
		}
		for r := lo; r <= hi; r++ {
			set[r] = true
		}
		return true
	}
	switch re.Op {
	case syntax.OpCharClass:
		if len(re.Rune) == 0 || len(re.Rune)%2 != 0 {
			return nil, false
		}
		for i := 0; i < len(re.Rune); i += 2 {
			if !add(re.Rune[i], re.Rune[i+1]) {
				return nil, false
			}
		}
	case syntax.OpLiteral:
		if len(re.Rune) != 1 {
			return nil, false
		}
		r := re.Rune[0]
		if !add(r, r) {
			return nil, false
		}
		if re.Flags&syntax.FoldCase != 0 {
			for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
				if !add(f, f) {
					return nil, false
				}
			}
		}
	default:
		return nil, false
	}
	return &set, true
}
