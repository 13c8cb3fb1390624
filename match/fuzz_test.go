package match_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

// FuzzMatch feeds arbitrary JSON as message and pattern: Compile may
// reject the pattern but must not panic, and matching must not panic and
// must agree between Match and MatchCaptures.
func FuzzMatch(f *testing.F) {
	if data, err := os.ReadFile("testdata/match.json"); err == nil {
		var file struct {
			Cases []struct {
				Message json.RawMessage `json:"message"`
				Pattern json.RawMessage `json:"pattern"`
			} `json:"cases"`
		}
		if err := json.Unmarshal(data, &file); err == nil {
			for _, c := range file.Cases {
				f.Add([]byte(c.Message), []byte(c.Pattern))
			}
		}
	}
	f.Add([]byte(`{"a":[1,{"b":null},[true]],"c":1e400}`), []byte(`{"a":{"1":1},"c":" special/(?P<x>.)/imsU"}`))
	f.Add([]byte(`{"a":"x"}`), []byte(`{"a":" special/(/"}`))
	f.Add([]byte(`{"a":[]}`), []byte(`{"a":[null,{"b":[" special//"]}]}`))
	f.Add([]byte(`[1]`), []byte(`"x"`))
	f.Fuzz(func(t *testing.T, msgJSON, patJSON []byte) {
		var pattern map[string]any
		if json.Unmarshal(patJSON, &pattern) != nil {
			return
		}
		p, err := match.Compile(pattern)
		if err != nil {
			return
		}
		// The transport's canonical decoding, and plain encoding/json.
		var msgs []message.Message
		if m, err := message.Unmarshal(msgJSON); err == nil {
			msgs = append(msgs, m)
		}
		var plain map[string]any
		if json.Unmarshal(msgJSON, &plain) == nil {
			msgs = append(msgs, plain)
		}
		for _, m := range msgs {
			got := p.Match(m)
			ok, caps := p.MatchCaptures(m)
			if ok != got {
				t.Fatalf("Match got %v, MatchCaptures got %v; want equal", got, ok)
			}
			if !ok && caps != nil {
				t.Fatalf("no match but captures %v; want nil", caps)
			}
		}
	})
}
