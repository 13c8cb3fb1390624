package main

import (
	"os"
	"strings"
	"testing"
)

// docCommand returns the command of docs/deploy.md (a "$ " line, its "\"
// continuations joined) that contains substr, without its prompt, its
// sudo and its trailing comment, so a test runs what the document says.
func docCommand(t *testing.T, docs, substr string) string {
	t.Helper()
	b, err := os.ReadFile(docs)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
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
		cmds = append(cmds, strings.TrimSpace(l))
	}
	var found []string
	for _, c := range cmds {
		if strings.Contains(c, substr) {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d commands contain %q, want 1: %q", docs, len(found), substr, found)
	}
	return found[0]
}
