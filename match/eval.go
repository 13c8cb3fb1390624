package match

import (
	"encoding/json"
	"strconv"

	"github.com/multimodule/multimodule/message"
)

// The evaluation functions take any value a message may hold, canonical or
// not, and never panic: a type they do not know simply does not match.
// caps is nil when the caller does not want captures.

// match reports whether the message value v matches the pattern node n.
func (n *node) match(v any, caps *Captures) bool {
	switch n.kind {
	case kindMap:
		switch t := v.(type) {
		case map[string]any:
			return n.matchMap(t, caps)
		case message.Message:
			return n.matchMap(t, caps)
		case []any:
			return n.listInKeys(t)
		}
		return false
	case kindScalar:
		if l, ok := v.([]any); ok {
			for _, e := range l {
				if n.scalarEqual(e) {
					return true
				}
			}
			return false
		}
		return n.scalarEqual(v)
	case kindBool:
		if l, ok := v.([]any); ok {
			for _, e := range l {
				if b, ok := e.(bool); ok && b == n.b {
					return true
				}
			}
			return false
		}
		b, ok := v.(bool)
		return ok && b == n.b
	case kindRegex:
		return n.matchRegex(v, caps)
	case kindList:
		l, ok := v.([]any)
		if !ok || len(l) < len(n.kids) {
			return false
		}
		for i := range n.kids {
			if !n.kids[i].match(l[i], caps) {
				return false
			}
		}
		return true
	}
	return false
}

// matchMap matches a map node against a message map: every pattern key must
// be present with a non-null value that matches.
func (n *node) matchMap(m map[string]any, caps *Captures) bool {
	for i, k := range n.keys {
		v, ok := m[k]
		if !ok || v == nil {
			return false
		}
		if !n.kids[i].match(v, caps) {
			return false
		}
	}
	return true
}

// listInKeys reports whether every element of the message list l is a
// scalar whose text is a key of the map pattern n.
func (n *node) listInKeys(l []any) bool {
	var buf [32]byte
	for _, e := range l {
		if s, ok := e.(string); ok {
			if _, hit := n.keyset[s]; !hit {
				return false
			}
			continue
		}
		b, ok := appendNumberText(buf[:0], e)
		if !ok {
			return false
		}
		if _, hit := n.keyset[string(b)]; !hit {
			return false
		}
	}
	return true
}

// scalarEqual reports whether the message scalar v has the pattern's text.
// It does not allocate.
func (n *node) scalarEqual(v any) bool {
	switch t := v.(type) {
	case string:
		return t == n.text
	case int64:
		return n.isInt && t == n.ival
	case float64:
		if isSmallIntegral(t) {
			return n.isInt && int64(t) == n.ival
		}
		var buf [32]byte
		return string(strconv.AppendFloat(buf[:0], t, 'g', 15, 64)) == n.text
	case json.Number:
		return string(t) == n.text
	case int:
		return n.isInt && int64(t) == n.ival
	}
	return false
}

// matchRegex applies a regex node to the text of a message scalar. A
// number's text is formatted on the stack; only the regexp (not a quick
// form) makes it escape.
func (n *node) matchRegex(v any, caps *Captures) bool {
	s, isString := v.(string)
	if !isString {
		var buf [32]byte
		b, ok := appendNumberText(buf[:0], v)
		if !ok {
			return false
		}
		if caps != nil && n.named {
			return n.captureRegex(string(b), caps)
		}
		if n.quick.kind != quickNone {
			return n.quick.match(string(b)) // does not escape: no allocation
		}
		return n.re.MatchString(string(b))
	}
	if caps != nil && n.named {
		return n.captureRegex(s, caps)
	}
	if n.quick.kind != quickNone {
		return n.quick.match(s)
	}
	return n.re.MatchString(s)
}

// captureRegex applies a regex node with named groups to s and records
// the groups that took part.
func (n *node) captureRegex(s string, caps *Captures) bool {
	loc := n.re.FindStringSubmatchIndex(s)
	if loc == nil {
		return false
	}
	for i, name := range n.re.SubexpNames() {
		if name == "" || loc[2*i] < 0 {
			continue
		}
		if *caps == nil {
			*caps = Captures{}
		}
		(*caps)[name] = s[loc[2*i]:loc[2*i+1]]
	}
	return true
}

// isSmallIntegral reports whether f prints as an integer under Perl's
// formatting (message.FormatFloat).
func isSmallIntegral(f float64) bool {
	return f == float64(int64(f)) && f < 1e15 && f > -1e15
}

// appendNumberText appends the canonical text of a numeric message value
// (as message.ScalarText gives it) to b; ok is false for non-numbers.
func appendNumberText(b []byte, v any) ([]byte, bool) {
	switch t := v.(type) {
	case int64:
		return strconv.AppendInt(b, t, 10), true
	case float64:
		if isSmallIntegral(t) {
			return strconv.AppendInt(b, int64(t), 10), true
		}
		return strconv.AppendFloat(b, t, 'g', 15, 64), true
	case json.Number:
		return append(b, t...), true
	case int:
		return strconv.AppendInt(b, int64(t), 10), true
	}
	return b, false
}
