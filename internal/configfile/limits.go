package configfile

import (
	"errors"
	"fmt"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Limits on one config document (a -c file, `config apply`, a message
// given to `send` in YAML). YAML aliases repeat the value of an anchor
// without repeating its text, so a few hundred bytes of nested aliases
// (the "billion laughs") expand to billions of values: the expansion is
// counted on the parsed document, before anything is expanded.
const (
	// MaxBytes is the largest document accepted.
	MaxBytes = 16 << 20
	// MaxValues is the largest number of values (maps, lists, keys and
	// scalars) a document may expand to, each alias counting as the
	// whole value it repeats.
	MaxValues = 1_000_000
	// MaxDepth is the deepest nesting of flow collections ([ and {) a
	// document may have.
	MaxDepth = 512
)

// ErrTooLarge is wrapped by the error of a document over one of the
// limits.
var ErrTooLarge = errors.New("config: document too large")

// UnmarshalYAML decodes YAML (or JSON) data into v, as yaml.Unmarshal
// with opts, after checking the document against MaxBytes, MaxDepth and
// MaxValues. A syntax error is left for the decoder to report.
func UnmarshalYAML(data []byte, v any, opts ...yaml.DecodeOption) error {
	if err := checkLimits(data); err != nil {
		return err
	}
	return yaml.UnmarshalWithOptions(data, v, opts...)
}

func checkLimits(data []byte) error {
	if len(data) > MaxBytes {
		return fmt.Errorf("%w: %d bytes, at most %d are accepted", ErrTooLarge, len(data), MaxBytes)
	}
	if line, ok := flowDepthOK(data); !ok {
		return fmt.Errorf("%w: line %d: nested deeper than %d levels", ErrTooLarge, line, MaxDepth)
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil // the decoder reports it, with the position
	}
	c := expansion{anchors: map[string]int{}}
	total := 0
	for _, doc := range f.Docs {
		total = addSat(total, c.size(doc))
	}
	if c.at != nil {
		return fmt.Errorf("%w: line %d, column %d: alias *%s expands to more than %d values",
			ErrTooLarge, c.at.Position.Line, c.at.Position.Column, c.at.Value, MaxValues)
	}
	if total > MaxValues {
		return fmt.Errorf("%w: more than %d values (aliases expanded)", ErrTooLarge, MaxValues)
	}
	return nil
}

// flowDepthOK scans for [ and { outside quoted scalars and comments and
// reports whether they nest at most MaxDepth deep (else the line where
// they pass it). The parser's cost grows faster than linearly with depth.
func flowDepthOK(data []byte) (line int, ok bool) {
	depth, line := 0, 1
	var quote byte
	comment := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\n' {
			line++
			comment = false
			continue
		}
		switch {
		case comment:
		case quote == '"':
			if c == '\\' {
				i++
			} else if c == '"' {
				quote = 0
			}
		case quote == '\'':
			if c == '\'' {
				quote = 0 // '' (an escaped quote) reopens at once
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || data[i-1] == ' ' || data[i-1] == '\t'):
			comment = true
		case c == '[' || c == '{':
			if depth++; depth > MaxDepth {
				return line, false
			}
		case c == ']' || c == '}':
			if depth > 0 {
				depth--
			}
		}
	}
	return 0, true
}

// expansion counts the values of a document with its aliases expanded.
// Each node is visited once: an anchor's expanded size is remembered, and
// an alias counts it again without walking it.
type expansion struct {
	anchors map[string]int
	at      *tokenPos // the first alias that expanded beyond MaxValues
}

type tokenPos struct {
	Position struct{ Line, Column int }
	Value    string
}

func addSat(a, b int) int {
	if a > MaxValues || b > MaxValues || a+b > MaxValues {
		return MaxValues + 1
	}
	return a + b
}

func (c *expansion) size(n ast.Node) int {
	switch t := n.(type) {
	case nil:
		return 0
	case *ast.DocumentNode:
		return c.size(t.Body)
	case *ast.MappingNode:
		s := 1
		for _, v := range t.Values {
			s = addSat(s, c.size(v))
		}
		return s
	case *ast.MappingValueNode:
		return addSat(c.size(t.Key), c.size(t.Value))
	case *ast.MappingKeyNode:
		return c.size(t.Value)
	case *ast.SequenceNode:
		s := 1
		for _, v := range t.Values {
			s = addSat(s, c.size(v))
		}
		return s
	case *ast.TagNode:
		return c.size(t.Value)
	case *ast.AnchorNode:
		s := c.size(t.Value)
		if t.Name != nil && t.Name.GetToken() != nil {
			c.anchors[t.Name.GetToken().Value] = s
		}
		return s
	case *ast.AliasNode:
		if t.Value == nil || t.Value.GetToken() == nil {
			return 1
		}
		tk := t.Value.GetToken()
		s, ok := c.anchors[tk.Value]
		if !ok {
			return 1 // undefined: the decoder reports it
		}
		if s > MaxValues && c.at == nil {
			c.at = &tokenPos{Value: tk.Value}
			c.at.Position.Line, c.at.Position.Column = tk.Position.Line, tk.Position.Column
		}
		return s
	}
	return 1
}
