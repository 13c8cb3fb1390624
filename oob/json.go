package oob

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/multimodule/multimodule/message"
)

// appendRecordJSON appends r as one JSON line: the same JSON, byte for
// byte, that message.Encode writes for r.Message(), without building the
// message or going through reflection (a file record is several times
// cheaper this way: docs/benchmarks.md).
func appendRecordJSON(b []byte, r Record) []byte {
	b = append(b, '{')
	if len(r.Details) > 0 {
		b = append(b, `"details":`...)
		b = appendJSONMap(b, r.Details, 0)
		b = append(b, ',')
	}
	b = append(b, `"oob_channel":`...)
	b = appendJSONString(b, r.Channel)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(r.PID), 10)
	b = append(b, `,"task":`...)
	b = appendJSONString(b, r.Task)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, r.Text)
	if !r.Time.IsZero() {
		b = append(b, `,"time":"`...)
		b = r.Time.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","ts":`...)
		b = appendJSONFloat(b, math.Round(float64(r.Time.UnixNano())/1e3)/1e6)
	}
	return append(b, "}\n"...)
}

func appendJSONMap(b []byte, m map[string]any, depth int) []byte {
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONValue(b, m[k], depth+1)
	}
	return append(b, '}')
}

// appendJSONValue appends v as jsonValue(v) would make it, then encoded.
func appendJSONValue(b []byte, v any, depth int) []byte {
	if depth > maxDetailDepth {
		return appendJSONString(b, fmt.Sprint(v))
	}
	switch t := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, t)
	case string:
		return appendJSONString(b, t)
	case int64:
		return strconv.AppendInt(b, t, 10)
	case int:
		return strconv.AppendInt(b, int64(t), 10)
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return appendJSONString(b, message.FormatFloat(t))
		}
		return appendJSONFloat(b, t)
	case json.Number:
		return append(b, t...)
	case map[string]any:
		return appendJSONMap(b, t, depth)
	case message.Message:
		return appendJSONMap(b, t, depth)
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONValue(b, e, depth+1)
		}
		return append(b, ']')
	}
	// Anything else: convert once (jsonValue returns canonical values
	// only), then encode that.
	return appendJSONValue(b, jsonValue(v, depth), depth)
}

// appendJSONFloat writes f as encoding/json does (ES6 number form).
func appendJSONFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-07 → e-7, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string the way encoding/json does
// with HTML escaping off: invalid UTF-8 becomes U+FFFD, and U+2028 and
// U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, `\b`...)
			case '\f':
				b = append(b, `\f`...)
			case '\n':
				b = append(b, `\n`...)
			case '\r':
				b = append(b, `\r`...)
			case '\t':
				b = append(b, `\t`...)
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
