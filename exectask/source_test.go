package exectask_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/exectask"
)

func writeTask(t *testing.T, path string, stateful bool, mode os.FileMode) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\nprintf '{\"type\":\"hello\",\"protocol\":1,\"stateful\":%v}\\n'\ncat >/dev/null\n", stateful)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // a new inode: a new file version
		t.Fatal(err)
	}
}

func TestDirSource(t *testing.T) {
	dir := t.TempDir()
	writeTask(t, filepath.Join(dir, "A"), true, 0o755)
	writeTask(t, filepath.Join(dir, "NotExecutable"), true, 0o644)
	if err := os.Mkdir(filepath.Join(dir, "Sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := exectask.Open(dir, exectask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	changed := make(chan string, 16)
	d.OnChange(func(name string) { changed <- name })

	t.Run("lists executables only, with stateful from the handshake", func(t *testing.T) {
		defs := d.List()
		if len(defs) != 1 || defs[0].Name != "A" || !defs[0].Stateful || defs[0].Origin != filepath.Join(dir, "A") {
			t.Fatalf("got %+v, want only A, stateful, from %s", defs, dir)
		}
		if _, ok := d.Lookup("NotExecutable"); ok {
			t.Errorf("NotExecutable: got found, want not a task")
		}
		if _, ok := d.Lookup("../A"); ok {
			t.Errorf("../A: got found, want an invalid name refused")
		}
	})
	t.Run("a new executable is found and announced", func(t *testing.T) {
		writeTask(t, filepath.Join(dir, "C"), false, 0o755)
		deadline := time.After(10 * time.Second)
		for got := ""; got != "C"; {
			select {
			case got = <-changed:
			case <-deadline:
				t.Fatal("no OnChange(C) within 10s")
			}
		}
		if def, ok := d.Lookup("C"); !ok || def.Stateful {
			t.Fatalf("C: got %+v, %v; want a stateless task", def, ok)
		}
	})
	t.Run("an edit is picked up; a start corrects a stale answer", func(t *testing.T) {
		writeTask(t, filepath.Join(dir, "A"), false, 0o755)
		def, ok := d.Lookup("A")
		if !ok || def.Stateful {
			t.Fatalf("A after the edit: got %+v; want stateless", def)
		}
		// Changed again between lookup and build: the build refuses once.
		writeTask(t, filepath.Join(dir, "A"), true, 0o755)
		if _, err := def.New(); err == nil || !strings.Contains(err.Error(), "now declares stateful=true") {
			t.Fatalf("build with a stale definition: got %v, want a refusal naming the change", err)
		}
		if def, _ := d.Lookup("A"); !def.Stateful {
			t.Fatalf("A after the refused build: got stateless, want the corrected stateful")
		}
	})
}

// TestDescribeOfATaskThatExitsAfterItsHello: in describe mode a task may
// exit right after its hello (the helpers do), before the host has written
// the welcome. That is a complete describe, not a failure (were it one,
// the welcome meeting a broken pipe would make the task be taken for
// stateless, and the warning logged about it could deadlock an external
// process, see host.ConfigureAll). The task here closes its stdin before
// its hello, so the welcome always meets a broken pipe. In run mode the
// same early exit fails the start, reported as an exit.
func TestDescribeOfATaskThatExitsAfterItsHello(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Hasty")
	script := "#!/bin/sh\nexec 0<&-\nprintf '{\"type\":\"hello\",\"protocol\":1,\"stateful\":true}\\n'\necho 'Hasty: done' >&2\nexit 4\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		hello, err := exectask.Describe(exectask.Spec{Name: "Hasty", Path: path})
		if err != nil {
			t.Fatalf("describe: got %v, want the hello", err)
		}
		if !hello.Stateful {
			t.Fatalf("describe: got %+v, want stateful", hello)
		}
	}
	_, err := exectask.Start(exectask.Spec{Name: "Hasty", Path: path})
	if err == nil {
		t.Fatal("start: got no error, want a failed start")
	}
	for _, want := range []string{"Hasty", "exited", "exit status 4", "Hasty: done"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start: got error %q, want it to contain %q", err, want)
		}
	}
}
