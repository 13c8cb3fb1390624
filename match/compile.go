package match

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/multimodule/multimodule/message"
)

// maxDepth bounds how deeply a pattern may nest, as message does for
// messages; deeper patterns are rejected instead of exhausting the stack.
const maxDepth = 512

// specialPrefix starts every special pattern string; regexPrefix is the
// only special match knows.
const (
	specialPrefix = " special"
	regexPrefix   = " special/"
)

// regexFlags are the flags accepted after a regex special's closing slash;
// each maps to the RE2 flag of the same letter.
const regexFlags = "imsU"

// kind says what a compiled pattern node compares against.
type kind uint8

const (
	kindMap    kind = iota // a map pattern (the zero node: an empty map matches every map)
	kindNever              // null, or anything that can never match
	kindScalar             // a string or number, compared as text
	kindBool               // true or false
	kindRegex              // a " special/REGEX/" string
	kindList               // a list pattern, matched element by element
)

// node is one compiled pattern value.
type node struct {
	kind kind

	// kindScalar: the canonical text, and its integer value when the text
	// is a canonical integer (so int64 message values compare without
	// formatting).
	text  string
	isInt bool
	ival  int64

	// kindBool
	b bool

	// kindRegex
	re    *regexp.Regexp
	named bool  // re has named groups worth capturing
	quick quick // a cheaper evaluation of re's common shapes, if it has one

	// kindMap: keys sorted, kids[i] is the pattern under keys[i]; keyset
	// serves list-vs-map matching. kindList: kids are the elements.
	keys   []string
	kids   []node
	keyset map[string]struct{}
}

func pathKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func errAt(path, format string, args ...any) error {
	if path == "" {
		path = "(top)"
	}
	return fmt.Errorf("match: at %q: %s", path, fmt.Sprintf(format, args...))
}

func compileMap(m map[string]any, path string, depth int) (node, error) {
	if depth > maxDepth {
		return node{}, errAt(path, "pattern nested deeper than %d levels", maxDepth)
	}
	n := node{kind: kindMap}
	if len(m) == 0 {
		return n, nil
	}
	n.keys = make([]string, 0, len(m))
	for k := range m {
		n.keys = append(n.keys, k)
	}
	sort.Strings(n.keys)
	n.kids = make([]node, len(n.keys))
	n.keyset = make(map[string]struct{}, len(n.keys))
	for i, k := range n.keys {
		kid, err := compileValue(m[k], pathKey(path, k), depth+1)
		if err != nil {
			return node{}, err
		}
		n.kids[i] = kid
		n.keyset[k] = struct{}{}
	}
	return n, nil
}

func compileValue(v any, path string, depth int) (node, error) {
	if depth > maxDepth {
		return node{}, errAt(path, "pattern nested deeper than %d levels", maxDepth)
	}
	switch t := v.(type) {
	case nil:
		return node{kind: kindNever}, nil
	case bool:
		return node{kind: kindBool, b: t}, nil
	case string:
		if strings.HasPrefix(t, specialPrefix) {
			return compileSpecial(t, path)
		}
		return scalarNode(t), nil
	case int64:
		return scalarNode(strconv.FormatInt(t, 10)), nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return node{}, errAt(path, "%v is not a JSON number", t)
		}
		return scalarNode(message.FormatFloat(t)), nil
	case map[string]any:
		return compileMap(t, path, depth)
	case message.Message:
		return compileMap(t, path, depth)
	case []any:
		n := node{kind: kindList, kids: make([]node, len(t))}
		for i, e := range t {
			kid, err := compileValue(e, pathIndex(path, i), depth+1)
			if err != nil {
				return node{}, err
			}
			n.kids[i] = kid
		}
		return n, nil
	}
	// json.Number and the Go types a pattern author naturally writes (int,
	// []string, …): convert to the canonical form, then compile that.
	c, err := message.NormalizeValue(v)
	if err != nil {
		return node{}, errAt(path, "%T value is not JSON-compatible", v)
	}
	if n, ok := c.(json.Number); ok {
		// An integer too large for int64: its text is canonical.
		return scalarNode(string(n)), nil
	}
	return compileValue(c, path, depth)
}

func scalarNode(text string) node {
	n := node{kind: kindScalar, text: text}
	if i, err := strconv.ParseInt(text, 10, 64); err == nil && strconv.FormatInt(i, 10) == text {
		n.isInt, n.ival = true, i
	}
	return n
}

// compileSpecial compiles a pattern string that starts with " special".
// The only special is the regex, " special/REGEX/FLAGS"; the regex runs
// up to the last slash, so it may itself contain slashes.
func compileSpecial(s, path string) (node, error) {
	if !strings.HasPrefix(s, regexPrefix) {
		return node{}, errAt(path, "unknown special %q: want %q", s, regexPrefix+"REGEX/FLAGS")
	}
	body := s[len(regexPrefix):]
	end := strings.LastIndexByte(body, '/')
	if end < 0 {
		return node{}, errAt(path, "bad regex %q: no closing slash (want %q)", s, regexPrefix+"REGEX/FLAGS")
	}
	expr, flags := body[:end], body[end+1:]
	for _, f := range flags {
		if !strings.ContainsRune(regexFlags, f) {
			return node{}, errAt(path, "bad regex %q: unknown flag %q (want some of %q)", s, f, regexFlags)
		}
	}
	if flags != "" {
		expr = "(?" + flags + ")" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return node{}, errAt(path, "bad regex %q: %v", s, err)
	}
	n := node{kind: kindRegex, re: re, quick: compileQuick(expr)}
	for _, name := range re.SubexpNames() {
		if name != "" {
			n.named = true
			break
		}
	}
	return n, nil
}
