// Package match decides whether a message matches a pattern, with the
// semantics of the original Perl Message::Match.
//
// A pattern is a map. A message matches when every key of the pattern
// matches the same key of the message, recursively:
//
//	message value  pattern value            matches when
//	scalar         scalar                   equal as text (1 and "1" are equal, 3 and 3.0 too)
//	scalar         " special/REGEX/FLAGS"   the regular expression matches the scalar's text
//	map            map                      every pattern key is present (non-null) and matches
//	list           scalar                   some element equals it (set membership, no specials)
//	list           list                     element i matches pattern element i, for every i
//	list           map                      every list element is a key of the pattern map
//	bool           bool                     equal
//	anything else                           no match
//
// A null on either side never matches; a bool never equals a number or a
// string. Numbers compare by their canonical text (message.ScalarText), so
// the number 1 equals "1" but not "1.0". An empty pattern matches every
// message.
//
// Regular expressions use Go's RE2 syntax. Flags may follow the closing
// slash: i (case-insensitive), m (multi-line), s (dot matches newline) and
// U (ungreedy); any other flag is an error. Named groups, written
// (?P<name>…) or (?<name>…), are returned by MatchCaptures so a route's
// transform can use them.
//
// Patterns are compiled once (Compile) and then matched against any number
// of messages, concurrently if wanted: a *Pattern is immutable. Matching
// never panics, whatever the message holds, and a scalar pattern matched
// against scalar values does not allocate.
package match

import (
	"github.com/multimodule/multimodule/message"
)

// Captures holds the named regular-expression groups that took part in a
// match: group name → matched text.
type Captures map[string]string

// Pattern is a compiled match pattern. The zero Pattern, like a nil
// *Pattern, is the empty pattern and matches every message. A Pattern is
// safe for concurrent use.
type Pattern struct {
	root node
}

// Compile checks and compiles pattern. Every value must be JSON-compatible
// (see message.Normalize) and every regex special must compile; the error
// names the path of the first bad value, e.g.
//
//	match: at "a.b": bad regex " special/(/": error parsing regexp: …
func Compile(pattern map[string]any) (*Pattern, error) {
	root, err := compileMap(pattern, "", 0)
	if err != nil {
		return nil, err
	}
	return &Pattern{root: root}, nil
}

// MustCompile is Compile for patterns known to be good (tests, examples,
// package-level variables); it panics if Compile fails.
func MustCompile(pattern map[string]any) *Pattern {
	p, err := Compile(pattern)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether m matches the pattern.
func (p *Pattern) Match(m message.Message) bool {
	if p == nil {
		return true
	}
	return p.root.matchMap(m, nil)
}

// MatchCaptures reports whether m matches the pattern and, when it does,
// the named regex groups that matched. Captures is nil when there are none
// (or when m does not match). When two regexes capture the same name, the
// one under the alphabetically later pattern key wins.
func (p *Pattern) MatchCaptures(m message.Message) (bool, Captures) {
	if p == nil {
		return true, nil
	}
	var caps Captures
	if !p.root.matchMap(m, &caps) {
		return false, nil
	}
	return true, caps
}

// Match compiles pattern and matches m against it, for one-off use. Code
// that matches many messages against the same pattern should Compile once.
func Match(m message.Message, pattern map[string]any) (bool, error) {
	p, err := Compile(pattern)
	if err != nil {
		return false, err
	}
	return p.Match(m), nil
}
