package mmtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NeedInterpreter skips t when the interpreter named by the #! line of the
// script at path (python3, perl, sh…) is not installed, saying which one
// and why. The suite runs on a machine with only Go installed; the exec
// tasks' tests need their interpreters. Under CI (the environment variable
// CI=true, as .ci/run is run) a missing interpreter fails the test instead:
// CI installs them, so a skip there would hide tests that never ran.
func NeedInterpreter(t testing.TB, path string) {
	t.Helper()
	interp, err := Interpreter(path)
	if err != nil {
		t.Fatalf("interpreter of %s: %v", path, err)
	}
	if interp == "" {
		return // not a script: nothing to look for
	}
	if _, err := exec.LookPath(interp); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s needs %s, which is not installed (CI must run every exec test: install it): %v", filepath.Base(path), interp, err)
		}
		t.Skipf("%s needs %s, which is not installed: %v", filepath.Base(path), interp, err)
	}
}

// Interpreter returns the program that the #! line of the script at path
// runs ("python3" for "#!/usr/bin/env python3", "/bin/sh" for "#!/bin/sh"),
// or "" when the file has no #! line.
func Interpreter(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read first line: %w", err)
	}
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return "", nil
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return "", fmt.Errorf("empty #! line")
	}
	if filepath.Base(fields[0]) == "env" {
		for _, f := range fields[1:] {
			if !strings.HasPrefix(f, "-") {
				return f, nil
			}
		}
		return "", fmt.Errorf("#!%s names no program", strings.TrimSpace(rest))
	}
	return fields[0], nil
}
