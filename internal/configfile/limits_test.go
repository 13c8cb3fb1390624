package configfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// bomb is the "billion laughs": each level is a list of 9 aliases of the
// level before, so levels levels expand to 9^levels strings.
func bomb(levels int) string {
	var b strings.Builder
	b.WriteString("T:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 1; i < levels; i++ {
		p := fmt.Sprintf("*a%d", i-1)
		fmt.Fprintf(&b, "  a%d: &a%d [%s]\n", i, i, strings.Join([]string{p, p, p, p, p, p, p, p, p}, ","))
	}
	return b.String()
}

func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A few hundred bytes of nested aliases expand to 9^9 strings: the
// expansion is counted before anything is decoded, and refused.
func TestAliasBombRefused(t *testing.T) {
	for _, levels := range []int{7, 9} {
		t.Run(fmt.Sprintf("%d levels", levels), func(t *testing.T) {
			doc := []byte(bomb(levels))
			var err error
			alloc := allocated(func() { _, err = Parse("bomb.yaml", doc) })
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "bomb.yaml") || !strings.Contains(err.Error(), "more than 1000000 values") {
				t.Fatalf("Parse: got %v, want ErrTooLarge naming the file and the alias", err)
			}
			if alloc > 16<<20 {
				t.Errorf("Parse allocated %d MB refusing a %d-byte document", alloc>>20, len(doc))
			}
			var v any
			if err := UnmarshalYAML(doc, &v); !errors.Is(err, ErrTooLarge) {
				t.Errorf("UnmarshalYAML (send's decoder): got %v, want ErrTooLarge", err)
			}
		})
	}
	// Small expansions, anchors and merge keys are fine.
	ok := "base: &b {x: 1, l: [1, 2]}\nA: {<<: *b, y: 2}\nB: {z: *b}\n"
	got, err := Parse("ok.yaml", []byte(bomb(4)+ok))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if a := got["A"].(map[string]any); a["x"] != int64(1) || a["y"] != int64(2) {
		t.Errorf("merge key: got %v", a)
	}
}

func TestDocumentLimits(t *testing.T) {
	deep := "A: {x: " + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + "}\n"
	if _, err := Parse("deep.yaml", []byte(deep)); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "nested deeper than 512") {
		t.Errorf("deep: got %v, want the nesting limit", err)
	}
	// Brackets in quoted strings and comments do not count.
	quoted := "A: {x: \"" + strings.Repeat("[", 2*MaxDepth) + "\", y: '" + strings.Repeat("{", 2*MaxDepth) + "'} # " + strings.Repeat("[", 2*MaxDepth) + "\n"
	if _, err := Parse("quoted.yaml", []byte(quoted)); err != nil {
		t.Errorf("quoted brackets: %v", err)
	}
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte("A: {x: \""+strings.Repeat("x", MaxBytes)+"\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), path) {
		t.Errorf("big file: got %v, want ErrTooLarge naming the file", err)
	}
}
