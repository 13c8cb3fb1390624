package mmtest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/multimodule/multimodule/mmtest"
)

func TestInterpreter(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, content, want string
	}{
		{"env", "#!/usr/bin/env python3\nprint(1)\n", "python3"},
		{"env with flag", "#!/usr/bin/env -S perl -w\n", "perl"},
		{"direct", "#!/bin/sh\necho\n", "/bin/sh"},
		{"direct with arg", "#! /usr/bin/perl -w\n", "/usr/bin/perl"},
		{"no shebang", "\x7fELF...", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := os.WriteFile(p, []byte(tt.content), 0o700); err != nil {
				t.Fatal(err)
			}
			got, err := mmtest.Interpreter(p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestNeedInterpreterSkips: a script whose interpreter is missing skips
// the test outside CI (the suite runs on a machine with only Go).
func TestNeedInterpreterSkips(t *testing.T) {
	if os.Getenv("CI") == "true" {
		t.Setenv("CI", "")
	}
	p := filepath.Join(t.TempDir(), "Task")
	if err := os.WriteFile(p, []byte("#!/usr/bin/env no-such-interpreter-mm\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	skipped := false
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		mmtest.NeedInterpreter(t, p)
	})
	if !skipped {
		t.Fatal("NeedInterpreter did not skip for a missing interpreter")
	}
}
