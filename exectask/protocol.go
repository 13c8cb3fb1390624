package exectask

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/multimodule/multimodule/message"
)

// ProtocolVersion is the newest protocol version this host speaks.
// SupportedVersions lists every version it speaks, oldest first.
const ProtocolVersion = 2

// SupportedVersions are the protocol versions this host speaks. Version 2
// is version 1 with pipelined message requests: the host may write the
// next messages before the first is acked (up to its window), and the
// task answers each, in order.
var SupportedVersions = []int64{1, 2}

// MaxLine bounds one line from a task (16 MiB); a longer line is a
// protocol error.
const MaxLine = 16 << 20

// Record types a task writes.
const (
	TypeHello     = "hello"
	TypeEmit      = "emit"
	TypeSend      = "send"
	TypeState     = "state"
	TypeOut       = "out"
	TypeRecur     = "recur"
	TypeDelRecurs = "del_recurs"
	TypeAck       = "ack"
)

// Record types the host writes.
const (
	TypeWelcome = "welcome"
	TypeConfig  = "config"
	TypeMessage = "message"
	TypeTick    = "tick"
	TypeError   = "error"
)

// Record is one parsed line from a task. Which fields are set depends on
// Type; ParseRecord checks them.
type Record struct {
	Type string

	// hello
	Name      string
	Protocols []int64 // the versions the task speaks
	Stateful  bool

	// emit, send, state
	Message     message.Message // emit, send
	Queue       string          // send
	Destination string          // send (optional)
	State       map[string]any  // state

	// out
	Channel string
	Text    string
	Details map[string]any

	// recur
	Interval float64 // seconds

	// ack
	ID    int64
	Error string // non-empty: the request failed
	Fail  bool   // the ack carries an error
}

// ProtocolError is a line from a task that breaks the protocol.
type ProtocolError struct {
	Line   []byte // the offending line (possibly cut short)
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("%s: %s", e.Reason, quoteLine(e.Line))
}

// quoteLine shows at most 300 bytes of a line, quoted.
func quoteLine(b []byte) string {
	const max = 300
	if len(b) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		return strconv.Quote(string(b[:cut])) + fmt.Sprintf("… (%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

func protoErr(line []byte, format string, args ...any) *ProtocolError {
	return &ProtocolError{Line: slices.Clone(line[:min(len(line), 1024)]), Reason: fmt.Sprintf(format, args...)}
}

// ParseRecord parses one line a task wrote (without its newline). Every
// failure is a *ProtocolError naming what is wrong.
func ParseRecord(line []byte) (Record, error) {
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if len(line) == 0 {
		return Record{}, protoErr(line, "empty line")
	}
	if id, ok := plainAck(line); ok {
		return Record{Type: TypeAck, ID: id}, nil
	}
	m, err := message.Unmarshal(line)
	if err != nil {
		return Record{}, protoErr(line, "not a JSON object (%v)", err)
	}
	typ, ok := m["type"].(string)
	if !ok {
		return Record{}, protoErr(line, `no string "type"`)
	}
	r := Record{Type: typ}
	switch typ {
	case TypeHello:
		if v, ok := m["name"]; ok {
			if r.Name, ok = v.(string); !ok {
				return Record{}, protoErr(line, `hello: "name" must be a string`)
			}
		}
		switch v := m["protocol"].(type) {
		case int64:
			r.Protocols = []int64{v}
		case []any:
			for _, e := range v {
				n, ok := e.(int64)
				if !ok {
					return Record{}, protoErr(line, `hello: "protocol" must be an integer or a list of integers`)
				}
				r.Protocols = append(r.Protocols, n)
			}
		default:
			return Record{}, protoErr(line, `hello: "protocol" must be an integer or a list of integers`)
		}
		if len(r.Protocols) == 0 {
			return Record{}, protoErr(line, `hello: "protocol" lists no version`)
		}
		if v, ok := m["stateful"]; ok {
			if r.Stateful, ok = v.(bool); !ok {
				return Record{}, protoErr(line, `hello: "stateful" must be true or false`)
			}
		}
	case TypeEmit, TypeSend:
		msg, ok := m["message"].(map[string]any)
		if !ok {
			return Record{}, protoErr(line, `%s: "message" must be a JSON object`, typ)
		}
		r.Message = msg
		if typ == TypeSend {
			if r.Queue, ok = m["queue"].(string); !ok || r.Queue == "" {
				return Record{}, protoErr(line, `send: "queue" must be a non-empty string`)
			}
			if v, ok := m["destination"]; ok && v != nil {
				if r.Destination, ok = v.(string); !ok {
					return Record{}, protoErr(line, `send: "destination" must be a string`)
				}
			}
		}
	case TypeState:
		st, ok := m["state"].(map[string]any)
		if !ok {
			return Record{}, protoErr(line, `state: "state" must be a JSON object`)
		}
		r.State = st
	case TypeOut:
		if r.Channel, ok = m["channel"].(string); !ok || r.Channel == "" {
			return Record{}, protoErr(line, `out: "channel" must be a non-empty string`)
		}
		if r.Text, ok = m["text"].(string); !ok {
			return Record{}, protoErr(line, `out: "text" must be a string`)
		}
		if v, ok := m["details"]; ok && v != nil {
			if r.Details, ok = v.(map[string]any); !ok {
				return Record{}, protoErr(line, `out: "details" must be a JSON object`)
			}
		}
	case TypeRecur:
		if r.Name, ok = m["name"].(string); !ok || r.Name == "" {
			return Record{}, protoErr(line, `recur: "name" must be a non-empty string`)
		}
		if r.Interval, ok = message.Float(m["interval"]); !ok || r.Interval <= 0 {
			return Record{}, protoErr(line, `recur: "interval" must be a positive number of seconds`)
		}
	case TypeDelRecurs:
	case TypeAck:
		if r.ID, ok = m["id"].(int64); !ok {
			return Record{}, protoErr(line, `ack: "id" must be an integer`)
		}
		if v, ok := m["error"]; ok && v != nil {
			r.Fail = true
			if s, ok := v.(string); ok {
				r.Error = s
			} else {
				r.Error = fmt.Sprint(v)
			}
			if r.Error == "" {
				r.Error = "failed (empty error)"
			}
		}
	default:
		return Record{}, protoErr(line, "unknown type %q", typ)
	}
	return r, nil
}

// plainAck recognises the commonest line, {"type":"ack","id":N} exactly
// (as the helper libraries write it), without a JSON decoder.
func plainAck(line []byte) (int64, bool) {
	const prefix = `{"type":"ack","id":`
	if len(line) < len(prefix)+2 || string(line[:len(prefix)]) != prefix || line[len(line)-1] != '}' {
		return 0, false
	}
	digits := line[len(prefix) : len(line)-1]
	if len(digits) == 0 || len(digits) > 18 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	var id int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		id = id*10 + int64(c-'0')
	}
	return id, true
}

// Negotiate picks the newest version both sides speak.
func Negotiate(offered []int64) (int64, error) {
	best := int64(-1)
	for _, v := range offered {
		if slices.Contains(SupportedVersions, v) && v > best {
			best = v
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("no common protocol version: the host speaks %v, the task offers %v", SupportedVersions, offered)
	}
	return best, nil
}

// errNoMarshal marks a host value that cannot be written as JSON.
var errNoMarshal = errors.New("exectask: value is not JSON-compatible")

// appendRequest appends one host line {"type":T,"id":N,"<key>":<value>}
// and its newline to buf. "type" comes first and "id" second, always, so
// that line-oriented tools (sed, awk) can pick them out.
func appendRequest(buf []byte, typ string, id int64, key string, value message.Message) ([]byte, error) {
	buf = append(buf, `{"type":"`...)
	buf = append(buf, typ...)
	buf = append(buf, `","id":`...)
	buf = strconv.AppendInt(buf, id, 10)
	if key != "" {
		buf = append(buf, `,"`...)
		buf = append(buf, key...)
		buf = append(buf, `":`...)
		b, err := message.Marshal(value)
		if err != nil {
			return buf, fmt.Errorf("%w: %v", errNoMarshal, err)
		}
		buf = append(buf, b...)
	}
	buf = append(buf, "}\n"...)
	return buf, nil
}

// appendTick appends {"type":"tick","id":N,"name":"…"}.
func appendTick(buf []byte, id int64, name string) []byte {
	buf = append(buf, `{"type":"tick","id":`...)
	buf = strconv.AppendInt(buf, id, 10)
	buf = append(buf, `,"name":`...)
	buf = appendJSONString(buf, name)
	return append(buf, "}\n"...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(buf []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(buf, b...)
}
