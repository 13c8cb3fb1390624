package mmtest

import (
	"os"
	"strings"
	"testing"
)

// DocCommand returns the one command of the document at path (a "$ "
// line, its "\" continuations joined) that contains substr, without its
// prompt, its sudo and its trailing comment, so that a test runs what the
// document tells a user to run. It fails t unless exactly one command
// contains substr.
func DocCommand(t testing.TB, path, substr string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l, ok := strings.CutPrefix(lines[i], "$ ")
		if !ok {
			continue
		}
		for strings.HasSuffix(l, "\\") && i+1 < len(lines) {
			i++
			l = strings.TrimSuffix(l, "\\") + strings.TrimSpace(lines[i])
		}
		if j := strings.Index(l, "   #"); j >= 0 {
			l = l[:j]
		}
		l = strings.TrimPrefix(l, "sudo -u multimodule ")
		l = strings.TrimPrefix(l, "sudo ")
		if l = strings.TrimSpace(l); strings.Contains(l, substr) {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d commands contain %q, want 1: %q", path, len(found), substr, found)
	}
	return found[0]
}
