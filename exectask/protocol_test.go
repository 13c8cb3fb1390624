package exectask

import (
	"errors"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
)

func TestParseRecord(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    Record
		wantErr string
	}{
		{"hello with a list", `{"type":"hello","name":"A","protocol":[1,2],"stateful":true}`, Record{Type: TypeHello, Name: "A", Protocols: []int64{1, 2}, Stateful: true}, ""},
		{"hello with one version", `{"type":"hello","protocol":1}`, Record{Type: TypeHello, Protocols: []int64{1}}, ""},
		{"plain ack", `{"type":"ack","id":42}`, Record{Type: TypeAck, ID: 42}, ""},
		{"ack, other key order", `{"id":42,"type":"ack"}`, Record{Type: TypeAck, ID: 42}, ""},
		{"ack with error", `{"type":"ack","id":3,"error":"bad"}`, Record{Type: TypeAck, ID: 3, Fail: true, Error: "bad"}, ""},
		{"ack with CRLF", "{\"type\":\"ack\",\"id\":7}\r", Record{Type: TypeAck, ID: 7}, ""},
		{"recur", `{"type":"recur","name":"t","interval":0.5}`, Record{Type: TypeRecur, Name: "t", Interval: 0.5}, ""},
		{"del_recurs", `{"type":"del_recurs"}`, Record{Type: TypeDelRecurs}, ""},
		{"out", `{"type":"out","channel":"log","text":"hi"}`, Record{Type: TypeOut, Channel: "log", Text: "hi"}, ""},
		{"send", `{"type":"send","queue":"q","destination":"box2","message":{}}`, Record{Type: TypeSend, Queue: "q", Destination: "box2", Message: message.Message{}}, ""},
		{"not JSON", `hello`, Record{}, "not a JSON object"},
		{"a JSON list", `[1]`, Record{}, "not a JSON object"},
		{"empty", ``, Record{}, "empty line"},
		{"no type", `{"id":1}`, Record{}, `no string "type"`},
		{"unknown type", `{"type":"dance"}`, Record{}, `unknown type "dance"`},
		{"hello without protocol", `{"type":"hello"}`, Record{}, `"protocol" must be`},
		{"hello with empty protocol list", `{"type":"hello","protocol":[]}`, Record{}, "lists no version"},
		{"ack with a string id", `{"type":"ack","id":"1"}`, Record{}, `"id" must be an integer`},
		{"ack with a leading zero", `{"type":"ack","id":01}`, Record{}, "not a JSON object"},
		{"emit without message", `{"type":"emit"}`, Record{}, `"message" must be a JSON object`},
		{"send without queue", `{"type":"send","message":{}}`, Record{}, `"queue" must be`},
		{"state not a map", `{"type":"state","state":[1]}`, Record{}, `"state" must be a JSON object`},
		{"recur without interval", `{"type":"recur","name":"t"}`, Record{}, `"interval" must be`},
		{"out without channel", `{"type":"out","text":"x"}`, Record{}, `"channel" must be`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecord([]byte(tt.line))
			if tt.wantErr != "" {
				var pe *ProtocolError
				if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want a ProtocolError with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got.Type != tt.want.Type || got.Name != tt.want.Name || got.ID != tt.want.ID || got.Fail != tt.want.Fail ||
				got.Error != tt.want.Error || got.Stateful != tt.want.Stateful || got.Interval != tt.want.Interval ||
				got.Channel != tt.want.Channel || got.Text != tt.want.Text || got.Queue != tt.want.Queue ||
				got.Destination != tt.want.Destination || len(got.Protocols) != len(tt.want.Protocols) ||
				(tt.want.Message != nil) != (got.Message != nil) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		name    string
		offered []int64
		want    int64
		wantErr bool
	}{
		{"one common", []int64{1}, 1, false},
		{"newest common", []int64{0, 1, 9}, 1, false},
		{"none", []int64{7}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Negotiate(tt.offered)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestAppendRequest(t *testing.T) {
	b, err := appendRequest(nil, TypeMessage, 12, "message", message.Message{"a": int64(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "{\"type\":\"message\",\"id\":12,\"message\":{\"a\":1}}\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got, want := string(appendTick(nil, 3, "a\"b")), "{\"type\":\"tick\",\"id\":3,\"name\":\"a\\\"b\"}\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := appendRequest(nil, TypeMessage, 1, "message", message.Message{"f": func() {}}); !errors.Is(err, errNoMarshal) {
		t.Fatalf("got %v, want errNoMarshal", err)
	}
}

// FuzzParseRecord: any line either parses into a record of a known type
// or fails with a ProtocolError — never a panic; a plain ack parses the
// same with and without the fast path.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","name":"A","protocol":[1],"stateful":true}`,
		`{"type":"ack","id":1}`, `{"type":"ack","id":1,"error":"x"}`, `{"id":9,"type":"ack"}`,
		`{"type":"emit","message":{"a":[1,2,{"b":null}]}}`,
		`{"type":"send","queue":"q","message":{}}`,
		`{"type":"state","state":{"ct":1.5e300}}`,
		`{"type":"out","channel":"log","text":"t","details":{"k":"v"}}`,
		`{"type":"recur","name":"n","interval":1}`, `{"type":"del_recurs"}`,
		`{"type":"ack","id":99999999999999999999}`, `{"type":"ack","id":-1}`,
		`garbage`, ``, `{}`, `[]`, `{"type":1}`, "{\"type\":\"ack\",\"id\":1}\r",
	} {
		f.Add([]byte(s))
	}
	known := map[string]bool{TypeHello: true, TypeEmit: true, TypeSend: true, TypeState: true, TypeOut: true,
		TypeRecur: true, TypeDelRecurs: true, TypeAck: true}
	f.Fuzz(func(t *testing.T, line []byte) {
		rec, err := ParseRecord(line)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseRecord(%q): error %v is not a *ProtocolError", line, err)
			}
			_ = pe.Error()
			return
		}
		if !known[rec.Type] {
			t.Fatalf("ParseRecord(%q): unknown type %q accepted", line, rec.Type)
		}
		if id, ok := plainAck(line); ok {
			m, err := message.Unmarshal(line)
			if err != nil {
				t.Fatalf("fast path took %q, which is not JSON: %v", line, err)
			}
			if got, _ := message.Int(m["id"]); got != id || m["type"] != TypeAck || len(m) != 2 {
				t.Fatalf("fast path read %q as ack %d, the decoder as %v", line, id, m)
			}
		}
	})
}
