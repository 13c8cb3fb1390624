package message

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	gojson "github.com/goccy/go-json"
)

// ErrNotMap is returned by Unmarshal when the JSON text is valid but its
// top level is not an object.
var ErrNotMap = errors.New("message: top level must be a JSON object")

// Marshal encodes m as compact JSON: keys sorted, HTML characters (<, >,
// &) not escaped, U+2028 and U+2029 escaped, invalid UTF-8 written as
// \ufffd, floats as encoding/json formats them. It fails with an ErrNotJSON
// error naming the path of any value that is not JSON-compatible.
//
// The writing is github.com/goccy/go-json's, which writes the same bytes
// as encoding/json (the tests hold it to that) in about half the time
// (docs/benchmarks.md).
func Marshal(m Message) ([]byte, error) {
	n, err := Normalize(m)
	if err != nil {
		return nil, err
	}
	b, err := gojson.MarshalWithOption(map[string]any(n), gojson.DisableHTMLEscape())
	if err != nil {
		return nil, fmt.Errorf("message: encode: %w", err)
	}
	return b, nil
}

// Encode writes m as one line of JSON (Marshal's, with a trailing
// newline) to w.
func Encode(w io.Writer, m Message) error {
	b, err := Marshal(m)
	if err != nil {
		return err
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("message: encode: %w", err)
	}
	return nil
}

// Unmarshal decodes one JSON object into a Message of canonical types:
// integers become int64 (exact), larger integers json.Number, other numbers
// float64; invalid UTF-8 and unpaired surrogates in strings become U+FFFD,
// as encoding/json makes them. Text that is not a single JSON object is
// rejected; the error says where.
//
// The reading is github.com/goccy/go-json's, which reads the same values
// as encoding/json (the tests hold it to that) in 0.65 to 0.85 of the
// time (docs/benchmarks.md); input it refuses is read again by
// encoding/json, whose errors are the ones returned.
func Unmarshal(data []byte) (Message, error) {
	dec := gojson.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err == nil && m != nil {
		if end := dec.InputOffset(); end >= 0 && end <= int64(len(data)) && onlySpace(data[end:]) {
			if convertMap(m, 0) {
				return Message(m), nil
			}
		}
	}
	return unmarshalStd(data)
}

// onlySpace reports whether b is JSON whitespace alone.
func onlySpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// unmarshalStd is Unmarshal by encoding/json, which words the errors.
func unmarshalStd(data []byte) (Message, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	m, err := decodeOne(dec)
	if err == io.EOF {
		// decodeOne reports a clean end of input as io.EOF, which suits a
		// stream; for Unmarshal it means the data held nothing at all.
		return nil, errors.New("message: decode: no JSON object in the input")
	}
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("message: decode: unexpected data after the object at byte %d", dec.InputOffset())
	}
	return m, nil
}

// Decoder reads a stream of JSON objects (for example newline-delimited
// JSON) as Messages.
type Decoder struct{ dec *json.Decoder }

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	d := json.NewDecoder(r)
	d.UseNumber()
	return &Decoder{dec: d}
}

// Decode reads the next Message; it returns io.EOF at the end of input.
func (d *Decoder) Decode() (Message, error) { return decodeOne(d.dec) }

func decodeOne(dec *json.Decoder) (Message, error) {
	var raw any
	if err := dec.Decode(&raw); err != nil {
		if err == io.EOF {
			return nil, err
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("message: decode: invalid JSON at byte %d: %w", se.Offset, err)
		}
		return nil, fmt.Errorf("message: decode: %w", err)
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w, got %s", ErrNotMap, describe(raw))
	}
	if convertMap(obj, 0) {
		return Message(obj), nil
	}
	// convertNumbers converts what is left and names the path of what
	// it cannot.
	out, err := convertNumbers(obj, "", 0)
	if err != nil {
		return nil, err
	}
	return Message(out.(map[string]any)), nil
}

// convertMap replaces the json.Number values of a freshly decoded object
// in place by their canonical type, as convertNumbers does, without
// building the paths an error would need: false if it meets what
// convertNumbers refuses (then it may have converted part of the tree).
func convertMap(m map[string]any, depth int) bool {
	if depth > maxDepth {
		return false
	}
	for k, v := range m {
		switch t := v.(type) {
		case json.Number:
			n, ok := convertNumber(string(t))
			if !ok {
				return false
			}
			m[k] = n
		case map[string]any:
			if !convertMap(t, depth+1) {
				return false
			}
		case []any:
			if !convertList(t, depth+1) {
				return false
			}
		}
	}
	return true
}

func convertList(l []any, depth int) bool {
	if depth > maxDepth {
		return false
	}
	for i, v := range l {
		switch t := v.(type) {
		case json.Number:
			n, ok := convertNumber(string(t))
			if !ok {
				return false
			}
			l[i] = n
		case map[string]any:
			if !convertMap(t, depth+1) {
				return false
			}
		case []any:
			if !convertList(t, depth+1) {
				return false
			}
		}
	}
	return true
}

// convertNumber is numberValue for a JSON number literal, with a short
// cut for the usual integer.
func convertNumber(s string) (any, bool) {
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) > 0 && len(digits) <= 18 {
		var n int64
		for i := 0; i < len(digits); i++ {
			c := digits[i]
			if c < '0' || c > '9' {
				n = -1
				break
			}
			n = n*10 + int64(c-'0')
		}
		if n >= 0 {
			if len(digits) < len(s) {
				n = -n
			}
			return n, true
		}
	}
	v, err := numberValue(s, "")
	return v, err == nil
}

// convertNumbers replaces json.Number values in place by their canonical
// type. The decoded tree is fresh, so mutating it is safe.
func convertNumbers(v any, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, pathErr(path, "nested deeper than %d levels", maxDepth)
	}
	switch t := v.(type) {
	case json.Number:
		return numberValue(string(t), path)
	case map[string]any:
		for k, e := range t {
			switch e.(type) {
			case json.Number, map[string]any, []any:
				n, err := convertNumbers(e, joinPath(path, k), depth+1)
				if err != nil {
					return nil, err
				}
				t[k] = n
			}
		}
		return t, nil
	case []any:
		for i, e := range t {
			switch e.(type) {
			case json.Number, map[string]any, []any:
				n, err := convertNumbers(e, fmt.Sprintf("%s[%d]", path, i), depth+1)
				if err != nil {
					return nil, err
				}
				t[i] = n
			}
		}
		return t, nil
	}
	return v, nil
}
