package oob

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/multimodule/multimodule/message"
)

// humanTimeLayout is the time in a human line: UTC, milliseconds.
const humanTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// appendHuman appends r as one human line, ending in a newline:
//
//	2026-11-26T20:27:36.123Z 1234 LOG Task: text k=v k2="two words"
//
// Details are sorted by key, nested maps flattened with dots (a.b=1), lists
// written as JSON. A multi-line text keeps its lines, each continuation
// indented by a tab, so a record stays recognisable as one.
func appendHuman(b []byte, r Record) []byte {
	b = r.Time.UTC().AppendFormat(b, humanTimeLayout)
	b = append(b, ' ')
	return appendLine(b, r, "\n\t")
}

// appendLine appends the human line from the pid on; cont starts each
// continuation line of a multi-line text.
func appendLine(b []byte, r Record, cont string) []byte {
	b = strconv.AppendInt(b, int64(r.PID), 10)
	b = append(b, ' ')
	b = append(b, upperChannel(r.Channel)...)
	b = append(b, ' ')
	if r.Task != "" {
		b = append(b, r.Task...)
		b = append(b, ": "...)
	}
	text := strings.TrimRight(r.Text, "\r\n")
	for i := 0; ; i++ {
		line, rest, more := strings.Cut(text, "\n")
		if i > 0 {
			b = append(b, cont...)
		}
		b = append(b, line...)
		if !more {
			break
		}
		text = rest
	}
	if len(r.Details) > 0 {
		b = appendDetails(b, "", r.Details, 0)
	}
	return append(b, '\n')
}

func upperChannel(ch string) string {
	switch ch {
	case ChannelLog:
		return "LOG"
	case ChannelError:
		return "ERROR"
	case ChannelAlert:
		return "ALERT"
	case ChannelDebug:
		return "DEBUG"
	}
	return strings.ToUpper(ch)
}

func appendDetails(b []byte, prefix string, d map[string]any, depth int) []byte {
	for _, k := range slices.Sorted(maps.Keys(d)) {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		v := d[k]
		if mm, ok := v.(message.Message); ok {
			v = map[string]any(mm)
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 && depth < maxDetailDepth {
			b = appendDetails(b, key, sub, depth+1)
			continue
		}
		b = append(b, ' ')
		b = appendText(b, key)
		b = append(b, '=')
		b = appendHumanValue(b, v)
	}
	return b
}

func appendHumanValue(b []byte, v any) []byte {
	switch t := v.(type) {
	case string:
		return appendText(b, t)
	case int64:
		return strconv.AppendInt(b, t, 10)
	case int:
		return strconv.AppendInt(b, int64(t), 10)
	case float64:
		return append(b, message.FormatFloat(t)...)
	case bool:
		return strconv.AppendBool(b, t)
	case nil:
		return append(b, "null"...)
	}
	v = jsonValue(v, 0)
	if s, ok := v.(string); ok {
		return appendText(b, s)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return strconv.AppendQuote(b, err.Error())
	}
	return append(b, bytes.TrimRight(buf.Bytes(), "\n")...)
}

// appendText writes s bare when it is a simple token, quoted otherwise.
func appendText(b []byte, s string) []byte {
	if needsQuote(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// stamp fills what Handle owes a record: the time and the pid.
func stamp(r *Record, pid int) {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if r.PID == 0 {
		r.PID = pid
	}
}
