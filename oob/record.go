package oob

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/multimodule/multimodule/message"
)

// The standard channels. Any other non-empty name is a channel too.
const (
	ChannelLog   = "log"
	ChannelError = "error"
	ChannelAlert = "alert"
	ChannelDebug = "debug"
)

// The keys of a record as a message (Record.Message, RecordFromMessage).
const (
	KeyChannel = "oob_channel" // string: the channel
	KeyText    = "text"        // string: the record's text
	KeyTask    = "task"        // string: the task that wrote it ("" for the framework)
	KeyPID     = "pid"         // integer: the writing process's pid
	KeyTS      = "ts"          // number: the time, unix seconds with a fraction
	KeyTime    = "time"        // string: the same time, RFC 3339 in UTC (exact)
	KeyDetails = "details"     // map: the structured details, present when not empty
)

// Record is one out-of-band record.
type Record struct {
	Channel string    // "log", "error", "alert", "debug" or any other name
	Text    string    // one human sentence
	Task    string    // the task that wrote it; empty for framework records
	PID     int       // the writing process; 0 means this process
	Time    time.Time // when it was written; zero means when it is handled
	// Details holds optional structured details; an alert carries the whole
	// alert here. Values should be JSON-compatible; others are converted to
	// text when the record becomes a message.
	Details map[string]any
}

// Message returns the record as a routable message, the form in which it
// goes to files, queues and the router, and the form that filters match
// against:
//
//	oob_channel  string   the channel
//	text         string   the text
//	task         string   the task ("" for framework records)
//	pid          integer  the writing process's pid
//	ts           number   unix seconds with a fraction (microseconds)
//	time         string   RFC 3339 UTC with nanoseconds (exact)
//	details      map      the details, only when there are any
//
// ts and time are absent while Time is zero. The details are deep-copied
// and made JSON-compatible (errors, times and durations become text; any
// other value that JSON cannot carry becomes its fmt text), so the message
// shares nothing with the record.
func (r Record) Message() message.Message {
	m := message.Message{
		KeyChannel: r.Channel,
		KeyText:    r.Text,
		KeyTask:    r.Task,
		KeyPID:     int64(r.PID),
	}
	if !r.Time.IsZero() {
		m[KeyTS] = math.Round(float64(r.Time.UnixNano())/1e3) / 1e6
		m[KeyTime] = r.Time.UTC().Format(time.RFC3339Nano)
	}
	if len(r.Details) > 0 {
		m[KeyDetails] = jsonMap(r.Details, 0)
	}
	return m
}

// RecordFromMessage reads a record back from its message form (see
// Record.Message), for example one forwarded by an external process.
// oob_channel is required; text, task, pid, time/ts and details are
// optional but must have the right type when present. time wins over ts
// when both are present. Other keys (such as `source` or the transport's
// metadata) are ignored.
func RecordFromMessage(m message.Message) (Record, error) {
	var r Record
	if m == nil {
		return r, errors.New("oob: record from message: message is nil")
	}
	ch, ok := m[KeyChannel].(string)
	if !ok || ch == "" {
		return r, fmt.Errorf("oob: record from message: %q must be a non-empty string, got %s", KeyChannel, describe(m[KeyChannel]))
	}
	r.Channel = ch
	var err error
	if r.Text, err = optString(m, KeyText); err != nil {
		return Record{}, err
	}
	if r.Task, err = optString(m, KeyTask); err != nil {
		return Record{}, err
	}
	if v, present := m[KeyPID]; present && v != nil {
		pid, ok := message.Int(v)
		if !ok || pid < 0 || pid > math.MaxInt32 {
			return Record{}, fmt.Errorf("oob: record from message: %q must be a process id, got %s", KeyPID, describe(v))
		}
		r.PID = int(pid)
	}
	if r.Time, err = recordTime(m); err != nil {
		return Record{}, err
	}
	if v, present := m[KeyDetails]; present && v != nil {
		d, ok := v.(map[string]any)
		if !ok {
			if mm, isMsg := v.(message.Message); isMsg {
				d, ok = map[string]any(mm), true
			}
		}
		if !ok {
			return Record{}, fmt.Errorf("oob: record from message: %q must be a map, got %s", KeyDetails, describe(v))
		}
		r.Details = message.CopyValue(d).(map[string]any)
	}
	return r, nil
}

func optString(m message.Message, key string) (string, error) {
	v, present := m[key]
	if !present || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("oob: record from message: %q must be a string, got %s", key, describe(v))
	}
	return s, nil
}

func recordTime(m message.Message) (time.Time, error) {
	if v, present := m[KeyTime]; present && v != nil {
		s, ok := v.(string)
		if !ok {
			return time.Time{}, fmt.Errorf("oob: record from message: %q must be an RFC 3339 string, got %s", KeyTime, describe(v))
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("oob: record from message: %q: %w", KeyTime, err)
		}
		return t, nil
	}
	if v, present := m[KeyTS]; present && v != nil {
		f, ok := message.Float(v)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
			return time.Time{}, fmt.Errorf("oob: record from message: %q must be unix seconds, got %s", KeyTS, describe(v))
		}
		sec := math.Floor(f)
		return time.Unix(int64(sec), int64(math.Round((f-sec)*1e6))*1e3), nil
	}
	return time.Time{}, nil
}

func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "nothing"
	case string:
		return fmt.Sprintf("the string %q", t)
	case bool:
		return fmt.Sprintf("the bool %v", t)
	case int64, float64, int, json.Number:
		return fmt.Sprintf("the number %v", t)
	case []any:
		return "a list"
	case map[string]any, message.Message:
		return "a map"
	}
	return fmt.Sprintf("a %T", v)
}

// maxDetailDepth bounds how deep details are converted; deeper values
// become text instead of exhausting the stack.
const maxDetailDepth = 64

// jsonMap returns a deep, JSON-compatible copy of m.
func jsonMap(m map[string]any, depth int) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = jsonValue(v, depth+1)
	}
	return out
}

// jsonValue returns a deep, JSON-compatible copy of v. Values that JSON
// cannot carry become text: errors their message, times RFC 3339,
// durations their Go form ("1.5s"), anything else its fmt text.
func jsonValue(v any, depth int) any {
	if depth > maxDetailDepth {
		return fmt.Sprint(v)
	}
	switch t := v.(type) {
	case nil, bool, string, int64, json.Number:
		return v
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return message.FormatFloat(t)
		}
		return v
	case map[string]any:
		return jsonMap(t, depth)
	case message.Message:
		return jsonMap(t, depth)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = jsonValue(e, depth+1)
		}
		return out
	case error:
		return t.Error()
	case time.Time:
		return t.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return t.String()
	case fmt.Stringer:
		return t.String()
	}
	n, err := message.NormalizeValue(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return message.CopyValue(n)
}
