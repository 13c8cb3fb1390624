package oob_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
)

var when = time.Date(2026, 11, 26, 20, 27, 36, 123456789, time.UTC)

func TestRecordMessage(t *testing.T) {
	tests := []struct {
		name string
		r    oob.Record
		want message.Message
	}{
		{
			name: "all fields",
			r: oob.Record{Channel: "alert", Text: "cpu high", Task: "Foo", PID: 42, Time: when,
				Details: map[string]any{"level": "warn", "value": 1.5, "n": int64(3)}},
			want: message.Message{
				"oob_channel": "alert", "text": "cpu high", "task": "Foo", "pid": int64(42),
				"ts": 1795724856.123457, "time": "2026-11-26T20:27:36.123456789Z",
				"details": map[string]any{"level": "warn", "value": 1.5, "n": int64(3)},
			},
		},
		{
			name: "zero time and no details",
			r:    oob.Record{Channel: "log", Text: "hi"},
			want: message.Message{"oob_channel": "log", "text": "hi", "task": "", "pid": int64(0)},
		},
		{
			name: "details that JSON cannot carry become text",
			r: oob.Record{Channel: "error", Text: "x", Time: when, PID: 1, Details: map[string]any{
				"err":  errors.New("boom"),
				"took": 1500 * time.Millisecond,
				"at":   when,
				"n":    7, // int: normalized to int64
				"deep": map[string]any{"ch": make(chan int)},
			}},
			want: message.Message{
				"oob_channel": "error", "text": "x", "task": "", "pid": int64(1),
				"ts": 1795724856.123457, "time": "2026-11-26T20:27:36.123456789Z",
				"details": map[string]any{
					"err": "boom", "took": "1.5s", "at": "2026-11-26T20:27:36.123456789Z", "n": int64(7),
					"deep": map[string]any{"ch": "CHAN"},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.Message()
			// A channel prints as an address; only its presence as text matters.
			if d, ok := got["details"].(map[string]any); ok {
				if deep, ok := d["deep"].(map[string]any); ok {
					if s, ok := deep["ch"].(string); ok && strings.HasPrefix(s, "0x") {
						deep["ch"] = "CHAN"
					}
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
			if _, err := message.Marshal(got); err != nil {
				t.Errorf("Message() is not JSON-compatible: %v", err)
			}
		})
	}
}

func TestRecordMessageSharesNothing(t *testing.T) {
	inner := map[string]any{"k": "v"}
	r := oob.Record{Channel: "alert", Details: map[string]any{"alert": inner}}
	m := r.Message()
	m["details"].(map[string]any)["alert"].(map[string]any)["k"] = "changed"
	if got := inner["k"]; got != "v" {
		t.Errorf("record details changed through the message: got %v, want v", got)
	}
}

func TestRecordFromMessage(t *testing.T) {
	tests := []struct {
		name string
		m    message.Message
		want oob.Record
	}{
		{
			name: "round trip of a full record",
			m: oob.Record{Channel: "alert", Text: "t", Task: "Foo", PID: 42, Time: when,
				Details: map[string]any{"a": map[string]any{"b": int64(1)}}}.Message(),
			want: oob.Record{Channel: "alert", Text: "t", Task: "Foo", PID: 42, Time: when,
				Details: map[string]any{"a": map[string]any{"b": int64(1)}}},
		},
		{
			name: "only the channel",
			m:    message.Message{"oob_channel": "mine"},
			want: oob.Record{Channel: "mine"},
		},
		{
			name: "ts without time, pid as a float, extra keys ignored",
			m:    message.Message{"oob_channel": "log", "ts": 1795724856.5, "pid": 7.0, "source": "X", ".ipc_transit_meta": map[string]any{}},
			want: oob.Record{Channel: "log", PID: 7, Time: time.Unix(1795724856, 500000000)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := oob.RecordFromMessage(tt.m)
			if err != nil {
				t.Fatalf("RecordFromMessage: %v", err)
			}
			if !got.Time.Equal(tt.want.Time) {
				t.Errorf("Time: got %v, want %v", got.Time, tt.want.Time)
			}
			got.Time, tt.want.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestRecordFromMessageErrors(t *testing.T) {
	tests := []struct {
		name    string
		m       message.Message
		wantErr string
	}{
		{"nil message", nil, "message is nil"},
		{"no channel", message.Message{"text": "x"}, `"oob_channel" must be a non-empty string, got nothing`},
		{"empty channel", message.Message{"oob_channel": ""}, `"oob_channel" must be a non-empty string, got the string ""`},
		{"channel not a string", message.Message{"oob_channel": int64(1)}, `"oob_channel" must be a non-empty string, got the number 1`},
		{"text not a string", message.Message{"oob_channel": "log", "text": []any{}}, `"text" must be a string, got a list`},
		{"task not a string", message.Message{"oob_channel": "log", "task": true}, `"task" must be a string, got the bool true`},
		{"pid not a number", message.Message{"oob_channel": "log", "pid": "abc"}, `"pid" must be a process id, got the string "abc"`},
		{"negative pid", message.Message{"oob_channel": "log", "pid": int64(-1)}, `"pid" must be a process id`},
		{"bad time", message.Message{"oob_channel": "log", "time": "yesterday"}, `"time": parsing time`},
		{"ts not a number", message.Message{"oob_channel": "log", "ts": "soon"}, `"ts" must be unix seconds, got the string "soon"`},
		{"details not a map", message.Message{"oob_channel": "log", "details": "x"}, `"details" must be a map, got the string "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := oob.RecordFromMessage(tt.m)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
