package match

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// quickCorpus is matched against every regex of the quick tests: ASCII,
// case variants, non-ASCII runes that fold to ASCII letters (ſ, K),
// newlines and invalid UTF-8.
var quickCorpus = []string{
	"", "x", "xx", "xxxxxxxxxx", "xxY", "X", "Producer", "producer", "Prod", "Pro",
	"OtherProd", "web1", "web12", "web1\n", "\nweb1", "a\nb", "12345", "12a45", "-12",
	"err", "an err", "error", "ERR", "timeout", "a timeout b", "ſ", "K", "k", "é", "xé",
	"\xff", "x\xff", "\xffx", "\xef\xbf\xbd", "\xe9\xc3\xa9", "_a_1", "a b",
}

func TestQuickShapes(t *testing.T) {
	tests := []struct {
		expr string
		want quickKind
	}{
		{"^Prod", quickPrefix},
		{"^(Prod)", quickPrefix},
		{"^(?:Prod)", quickPrefix},
		{"err$", quickSuffix},
		{"timeout", quickContains},
		{"^web1$", quickEqual},
		{`^/a/b$`, quickEqual},
		{"^é$", quickEqual},
		{"^x*$", quickRun},
		{"^x+$", quickRun},
		{"^[0-9]+$", quickRun},
		{`^\d*$`, quickRun},
		{`^\w+$`, quickRun},
		{"(?i)^x*$", quickRun},
		{"^[[:alpha:]_]*$", quickRun},
		// kept on the regexp
		{"(?i)^prod", quickNone},
		{"(?m)^web1$", quickNone},
		{"(?i)^k*$", quickNone}, // k folds to K (U+212A)
		{"(?i)^[a-z]+$", quickNone},
		{"^[^a]*$", quickNone},
		{"^.*$", quickNone},
		{"^x{2,}$", quickNone},
		{"^x*", quickNone},
		{"a|b", quickNone},
		{"^a.c$", quickNone},
		{"", quickNone},
		{"^$", quickNone},
		{`\bword\b`, quickNone},
		{"^\uFFFD", quickNone},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			q := compileQuick(tt.expr)
			if q.kind != tt.want {
				t.Fatalf("compileQuick(%q).kind = %d, want %d", tt.expr, q.kind, tt.want)
			}
			checkQuick(t, tt.expr, quickCorpus...)
		})
	}
}

// checkQuick fails if expr's quick form disagrees with regexp on any of
// texts.
func checkQuick(t *testing.T, expr string, texts ...string) {
	t.Helper()
	re, err := regexp.Compile(expr)
	if err != nil {
		return
	}
	q := compileQuick(expr)
	if q.kind == quickNone {
		return
	}
	for _, s := range texts {
		if got, want := q.match(s), re.MatchString(s); got != want {
			t.Errorf("quick form (kind %d) of %q on %q: got %v, want %v (regexp)", q.kind, expr, s, got, want)
		}
	}
}

// TestQuickRegexSpecial checks the quick forms through the public path:
// a pattern's regex special on strings and numbers, with and without
// captures wanted.
func TestQuickRegexSpecial(t *testing.T) {
	tests := []struct {
		pat  string
		v    any
		want bool
	}{
		{" special/^x*$/", strings.Repeat("x", 110), true},
		{" special/^x*$/", strings.Repeat("x", 109) + "y", false},
		{" special/^Prod/", "Producer", true},
		{" special/^Other/", "Producer", false},
		{" special/^[0-9]+$/", int64(404), true},
		{" special/^[0-9]+$/", int64(-404), false},
		{" special/^-4/", int64(-404), true},
		{" special/^2\\.5$/", 2.5, true},
		{" special/^(?:404)$/", 404.0, true},
		{" special/^X+$/i", "xXx", true},
		{" special/^(?P<name>x)/", "xy", true}, // named: captures keep the regexp
	}
	for _, tt := range tests {
		n, err := compileSpecial(tt.pat, "a")
		if err != nil {
			t.Fatalf("compileSpecial(%q): %v", tt.pat, err)
		}
		var caps Captures
		if got := n.matchRegex(tt.v, nil); got != tt.want {
			t.Errorf("%q on %#v: got %v, want %v", tt.pat, tt.v, got, tt.want)
		}
		if got := n.matchRegex(tt.v, &caps); got != tt.want {
			t.Errorf("%q on %#v with captures: got %v, want %v", tt.pat, tt.v, got, tt.want)
		}
	}
}

// FuzzQuickRegex: wherever a regex has a quick form, the quick form
// agrees with regexp.MatchString on any text.
func FuzzQuickRegex(f *testing.F) {
	for _, s := range []string{"^Prod", "err$", "timeout", "^web1$", "^x*$", "^[0-9]+$", `^\w+$`, "(?i)^x*$", "^é$", "(x)", "^(?P<a>ab)$"} {
		for _, text := range quickCorpus {
			f.Add(s, text)
		}
	}
	f.Fuzz(func(t *testing.T, expr, text string) {
		if !utf8.ValidString(expr) {
			return
		}
		checkQuick(t, expr, text, text+text, "x"+text, text+"\n")
	})
}
