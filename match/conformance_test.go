package match_test

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

// conformanceCase is one entry of testdata/match.json (a byte-identical
// copy of the project's shared conformance file).
type conformanceCase struct {
	Name    string          `json:"name"`
	Message json.RawMessage `json:"message"`
	Pattern json.RawMessage `json:"pattern"`
	Expect  bool            `json:"expect"`
}

func loadConformance(t *testing.T) []conformanceCase {
	t.Helper()
	data, err := os.ReadFile("testdata/match.json")
	if err != nil {
		t.Fatalf("read conformance file: %v", err)
	}
	var file struct {
		Cases []conformanceCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("parse testdata/match.json: %v", err)
	}
	if len(file.Cases) == 0 {
		t.Fatal("testdata/match.json has no cases")
	}
	return file.Cases
}

// decodeCanonical decodes JSON the way the transport does (int64 for
// integers, float64 otherwise).
func decodeCanonical(t *testing.T, raw []byte) message.Message {
	t.Helper()
	m, err := message.Unmarshal(raw)
	if err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return m
}

// decodePlain decodes JSON with encoding/json defaults (every number a
// float64), as a config loader that does not care might.
func decodePlain(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return m
}

func TestConformance(t *testing.T) {
	for _, c := range loadConformance(t) {
		t.Run(c.Name, func(t *testing.T) {
			decoders := []struct {
				name   string
				decode func(*testing.T, []byte) map[string]any
			}{
				{"canonical", func(t *testing.T, b []byte) map[string]any { return decodeCanonical(t, b) }},
				{"plain", decodePlain},
			}
			for _, md := range decoders {
				for _, pd := range decoders {
					msg := message.Message(md.decode(t, c.Message))
					pat := pd.decode(t, c.Pattern)
					got, err := match.Match(msg, pat)
					if err != nil {
						t.Fatalf("message %s, pattern %s: Match: %v", md.name, pd.name, err)
					}
					if got != c.Expect {
						t.Errorf("message %s %s, pattern %s %s: got %v, want %v",
							md.name, c.Message, pd.name, c.Pattern, got, c.Expect)
					}
				}
			}
		})
	}
}
