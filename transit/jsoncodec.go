package transit

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"

	"github.com/multimodule/multimodule/message"
)

// The bus codec: the JSON of a message. It produces exactly what
// message.Marshal produces (compact, keys sorted, HTML not escaped, floats
// formatted as encoding/json does) and reads exactly what
// message.Unmarshal reads (integers as int64, larger integers as
// json.Number, other numbers as float64); whatever it is not sure of, it
// hands to the message package, which then decides (and words the error).
// The tests hold it to both, with encoding/json as the reference.
//
// Writing is github.com/goccy/go-json's: measured side by side it writes
// a bus message faster than a hand-written encoder did. Reading is this
// file's own decoder, which reads a bus message faster than that library
// does (with the numbers converted as the message package wants them) and
// notices, at no extra cost, the text it would have to change (see
// decodeExact). docs/benchmarks.md has the figures.

// marshal is message.Marshal for a normalized message (see normalize),
// without normalizing it again.
func marshal(m message.Message) ([]byte, error) {
	if m != nil {
		if b, err := gojson.MarshalWithOption(map[string]any(m), gojson.DisableHTMLEscape()); err == nil {
			return b, nil
		}
	}
	return message.Marshal(m) // it names what is wrong
}

// unmarshal is message.Unmarshal, without reflection when it can.
func unmarshal(data []byte) (message.Message, error) {
	d := decoder{data: data}
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == '{' {
		if m, ok := d.object(0); ok {
			d.skipSpace()
			if d.i == len(d.data) {
				return message.Message(m), nil
			}
		}
	}
	return message.Unmarshal(data)
}

// decodeExact is unmarshal for bytes from the bus: it refuses what
// unmarshal would change on the way in, invalid UTF-8 and escaped
// unpaired surrogates (which unmarshal, like encoding/json, turns into
// U+FFFD), naming the first one and its byte offset. It costs the usual
// message nothing more: the decoder notices them as it goes.
func decodeExact(data []byte) (message.Message, error) {
	d := decoder{data: data, lossy: -1}
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == '{' {
		if m, ok := d.object(0); ok {
			d.skipSpace()
			if d.i == len(d.data) {
				if d.lossy >= 0 {
					return nil, lossyError(data, d.lossy)
				}
				return message.Message(m), nil
			}
		}
	}
	// Input the decoder leaves to the message package: look for the
	// same faults first (a slow path, for unusual input only).
	if at := lossyAt(data); at >= 0 {
		return nil, lossyError(data, at)
	}
	return message.Unmarshal(data)
}

// lossyError describes the fault at byte at of data (see lossyAt).
func lossyError(data []byte, at int) error {
	if data[at] == '\\' {
		return fmt.Errorf("escaped unpaired surrogate %s at byte %d: it has no UTF-8 form (JSON text on the bus must be UTF-8)", data[at:at+6], at)
	}
	end := min(at+4, len(data))
	return fmt.Errorf("invalid UTF-8 at byte %d (% x): JSON text on the bus must be UTF-8", at, data[at:end])
}

// lossyAt returns the offset of the first invalid UTF-8 byte or escaped
// unpaired surrogate (\uD800 to \uDFFF without its partner) in data, or
// -1. Backslashes outside strings are not JSON anyway.
func lossyAt(data []byte) int {
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == '\\':
			if i+1 < len(data) && data[i+1] == 'u' {
				r, ok := hex4(data, i+2)
				if ok && utf16.IsSurrogate(r) {
					r2, ok2 := rune(-1), false
					if i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
						r2, ok2 = hex4(data, i+8)
					}
					if !ok2 || utf16.DecodeRune(r, r2) == utf8.RuneError {
						return i
					}
					i += 12
					continue
				}
				i += 6
				continue
			}
			i += 2
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return i
			}
			i += size
		}
	}
	return -1
}

// decoder reads JSON into canonical values. Any input it does not
// accept (invalid, or merely unusual) makes it give up: ok false.
type decoder struct {
	data []byte
	i    int
	buf  []byte // unescaping scratch
	// lossy is the offset of the first invalid UTF-8 byte or escaped
	// unpaired surrogate read, which became U+FFFD; -1 when none (and
	// when the caller does not care: it starts at 0 in unmarshal, so it
	// may be any offset there).
	lossy int
}

// maxDecodeDepth stays well under the message package's nesting limit:
// deeper input gets that package's verdict.
const maxDecodeDepth = 200

func (d *decoder) skipSpace() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// object reads an object; d.data[d.i] is '{'.
func (d *decoder) object(depth int) (map[string]any, bool) {
	if depth > maxDecodeDepth {
		return nil, false
	}
	d.i++
	m := make(map[string]any)
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == '}' {
		d.i++
		return m, true
	}
	for {
		if d.i >= len(d.data) || d.data[d.i] != '"' {
			return nil, false
		}
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		d.skipSpace()
		if d.i >= len(d.data) || d.data[d.i] != ':' {
			return nil, false
		}
		d.i++
		d.skipSpace()
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		m[k] = v
		d.skipSpace()
		if d.i >= len(d.data) {
			return nil, false
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			d.skipSpace()
		case '}':
			d.i++
			return m, true
		default:
			return nil, false
		}
	}
}

func (d *decoder) value(depth int) (any, bool) {
	if d.i >= len(d.data) {
		return nil, false
	}
	switch c := d.data[d.i]; {
	case c == '"':
		return d.str()
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case c == 't':
		return d.literal("true", true)
	case c == 'f':
		return d.literal("false", false)
	case c == 'n':
		return d.literal("null", nil)
	}
	return nil, false
}

func (d *decoder) literal(word string, v any) (any, bool) {
	if len(d.data)-d.i < len(word) || string(d.data[d.i:d.i+len(word)]) != word {
		return nil, false
	}
	d.i += len(word)
	return v, true
}

func (d *decoder) array(depth int) ([]any, bool) {
	if depth > maxDecodeDepth {
		return nil, false
	}
	d.i++
	out := []any{}
	d.skipSpace()
	if d.i < len(d.data) && d.data[d.i] == ']' {
		d.i++
		return out, true
	}
	for {
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		out = append(out, v)
		d.skipSpace()
		if d.i >= len(d.data) {
			return nil, false
		}
		switch d.data[d.i] {
		case ',':
			d.i++
			d.skipSpace()
		case ']':
			d.i++
			return out, true
		default:
			return nil, false
		}
	}
}

// number reads a JSON number: int64 when it is an integer that fits,
// json.Number for a larger integer, float64 otherwise.
func (d *decoder) number() (any, bool) {
	start := d.i
	i := d.i
	if i < len(d.data) && d.data[i] == '-' {
		i++
	}
	digits := i
	switch {
	case i < len(d.data) && d.data[i] == '0':
		i++
	case i < len(d.data) && d.data[i] >= '1' && d.data[i] <= '9':
		for i < len(d.data) && d.data[i] >= '0' && d.data[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	integer := true
	if i < len(d.data) && d.data[i] == '.' {
		integer = false
		i++
		j := i
		for i < len(d.data) && d.data[i] >= '0' && d.data[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
		}
	}
	if i < len(d.data) && (d.data[i] == 'e' || d.data[i] == 'E') {
		integer = false
		i++
		if i < len(d.data) && (d.data[i] == '+' || d.data[i] == '-') {
			i++
		}
		j := i
		for i < len(d.data) && d.data[i] >= '0' && d.data[i] <= '9' {
			i++
		}
		if i == j {
			return nil, false
		}
	}
	d.i = i
	text := d.data[start:i]
	if integer {
		if i-digits <= 18 { // fits in int64 without overflow checks
			var n int64
			for _, c := range d.data[digits:i] {
				n = n*10 + int64(c-'0')
			}
			if digits > start {
				n = -n
			}
			return n, true
		}
		if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
			return n, true
		}
		if _, err := strconv.ParseFloat(string(text), 64); err != nil {
			return nil, false // beyond float64: the message package refuses it
		}
		return json.Number(string(text)), true
	}
	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil {
		return nil, false // out of range: the message package says so
	}
	return f, true
}

// str reads a string; d.data[d.i] is '"'.
func (d *decoder) str() (string, bool) {
	d.i++
	start := d.i
	for i := start; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			d.i = i + 1
			return string(d.data[start:i]), true
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return d.slowStr(start)
		}
	}
	return "", false
}

// slowStr reads a string with escapes or non-ASCII bytes, from start
// (after the opening quote), as encoding/json does: invalid UTF-8 and
// unpaired surrogates become U+FFFD.
func (d *decoder) slowStr(start int) (string, bool) {
	b := d.buf[:0]
	i := start
	for i < len(d.data) {
		c := d.data[i]
		switch {
		case c == '"':
			d.i = i + 1
			d.buf = b
			return string(b), true
		case c < 0x20:
			return "", false
		case c == '\\':
			if i+1 >= len(d.data) {
				return "", false
			}
			i++
			switch e := d.data[i]; e {
			case '"', '\\', '/':
				b = append(b, e)
				i++
			case 'b':
				b = append(b, '\b')
				i++
			case 'f':
				b = append(b, '\f')
				i++
			case 'n':
				b = append(b, '\n')
				i++
			case 'r':
				b = append(b, '\r')
				i++
			case 't':
				b = append(b, '\t')
				i++
			case 'u':
				r, ok := hex4(d.data, i+1)
				if !ok {
					return "", false
				}
				i += 5
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+1 < len(d.data) && d.data[i] == '\\' && d.data[i+1] == 'u' {
						if v, ok := hex4(d.data, i+2); ok {
							r2 = v
						}
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
						if d.lossy < 0 {
							d.lossy = i - 6
						}
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", false
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(d.data[i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
				if d.lossy < 0 {
					d.lossy = i
				}
			} else {
				b = append(b, d.data[i:i+size]...)
			}
			i += size
		}
	}
	return "", false
}

func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}
