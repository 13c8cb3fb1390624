package match_test

import (
	"strings"
	"testing"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

func benchMessage() message.Message {
	return message.Message{
		"source":  "Example1",
		"ct":      int64(42),
		"outstr":  "howdy",
		"host":    "web12",
		"level":   "info",
		"value":   3.25,
		"tags":    []any{"a", "b"},
		"details": map[string]any{"k": "v"},
	}
}

// BenchmarkMatch2Keys8 matches a 2-key scalar pattern (a string and an
// integer) against an 8-key message.
func BenchmarkMatch2Keys8(b *testing.B) {
	p := match.MustCompile(map[string]any{"source": "Example1", "ct": int64(42)})
	msg := benchMessage()
	if !p.Match(msg) {
		b.Fatal("pattern does not match")
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Match(msg)
	}
}

// BenchmarkMatchRegexCaptures matches a named-group regex, with captures.
func BenchmarkMatchRegexCaptures(b *testing.B) {
	p := match.MustCompile(map[string]any{"host": " special/^(?P<role>[a-z]+)(?P<num>[0-9]+)$/"})
	msg := benchMessage()
	if ok, _ := p.MatchCaptures(msg); !ok {
		b.Fatal("pattern does not match")
	}
	b.ReportAllocs()
	for b.Loop() {
		p.MatchCaptures(msg)
	}
}

// BenchmarkMatchRegexAnchored matches the regexes of the fanout bench
// scenario: an anchored literal prefix against a short string, and an
// anchored character-class run (^x*$) against a 110-byte string.
func BenchmarkMatchRegexAnchored(b *testing.B) {
	p := match.MustCompile(map[string]any{"source": " special/^Prod/", "pad": " special/^x*$/"})
	msg := message.Message{"source": "Producer", "pad": strings.Repeat("x", 110)}
	if !p.Match(msg) {
		b.Fatal("pattern does not match")
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Match(msg)
	}
}
