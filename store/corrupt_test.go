package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// loaders are the Load methods that move corrupt files aside, by suffix.
func loaders(s *Store) map[string]func(task string) (any, error) {
	return map[string]func(task string) (any, error){
		confExt:   func(task string) (any, error) { return s.LoadConfig(task) },
		stateExt:  func(task string) (any, error) { return s.LoadState(task) },
		statusExt: func(task string) (any, error) { return s.LoadStatus(task) },
	}
}

func TestCorruptFilesMovedAside(t *testing.T) {
	tests := []struct {
		name    string
		content string
		problem string // substring of the error
		exts    []string
	}{
		{"empty", "", "empty file", nil},
		{"only whitespace", " \n", "empty file", nil},
		{"truncated", "{\n  \"ct\": 12,\n  \"name\": \"ab", "truncated", nil},
		{"torn after a key", `{"ct": `, "truncated", nil},
		{"not JSON", "ct=12\n", "invalid", nil},
		{"trailing data", `{"ct": 1}{"ct": 2}`, "after the object", nil},
		{"binary junk", "\x00\x00\x00\x00", "invalid", nil},
		{"top level list", `[1, 2]`, "", nil},
		{"top level null", `null`, "", nil},
		{"status field of the wrong type", `{"pid": "forty-two"}`, "pid", []string{statusExt}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			exts := tt.exts
			if exts == nil {
				exts = []string{confExt, stateExt, statusExt}
			}
			for _, ext := range exts {
				path := writeRaw(t, s, "T"+ext, []byte(tt.content))
				got, err := loaders(s)[ext]("T")
				if !isNil(got) {
					t.Errorf("Load%s: got %#v, want nil", ext, got)
				}
				var ce *CorruptError
				if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
					t.Fatalf("Load%s: got error %v, want a *CorruptError wrapping ErrCorrupt", ext, err)
				}
				for _, w := range []string{path, tt.problem, "moved aside to " + path + ".corrupt"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Load%s error: got %q, want it to contain %q", ext, err, w)
					}
				}
				if ce.MovedTo != path+".corrupt" {
					t.Errorf("MovedTo: got %q, want %q", ce.MovedTo, path+".corrupt")
				}
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s after load: got %v, want it gone", path, err)
				}
				if got := string(readRaw(t, path+".corrupt")); got != tt.content {
					t.Errorf("%s.corrupt: got %q, want the corrupt content %q", path, got, tt.content)
				}
				// The caller starts from empty: the next load finds nothing.
				if got, err := loaders(s)[ext]("T"); !isNil(got) || err != nil {
					t.Errorf("second Load%s: got %v, %v, want nil, nil", ext, got, err)
				}
			}
		})
	}
}

func isNil(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case map[string]any:
		return t == nil
	case *Status:
		return t == nil
	}
	return false
}

func TestCorruptKeepsNewestAndOlder(t *testing.T) {
	s := openStore(t)
	path := filepath.Join(s.Dir(), "T.state")
	contents := []string{"first {", "second {", "third {"}
	for _, c := range contents {
		writeRaw(t, s, "T.state", []byte(c))
		if _, err := s.LoadState("T"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("LoadState(%q): got %v, want ErrCorrupt", c, err)
		}
	}
	if got := string(readRaw(t, path+".corrupt")); got != "third {" {
		t.Errorf("T.state.corrupt: got %q, want the newest %q", got, "third {")
	}
	var older []string
	for _, n := range dirNames(t, s.Dir()) {
		if strings.HasPrefix(n, "T.state.corrupt.") {
			older = append(older, string(readRaw(t, filepath.Join(s.Dir(), n))))
		}
	}
	if len(older) != 2 || !contains(older, "first {") || !contains(older, "second {") {
		t.Errorf("timestamped older corrupt files: got %q, want %q", older, contents[:2])
	}
	// Nothing moved aside is mistaken for a task file.
	tasks, err := s.Tasks()
	if err != nil || len(tasks) != 0 {
		t.Errorf("Tasks: got %v, %v, want none", tasks, err)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func TestValidFileReplacingCorruptIsLoaded(t *testing.T) {
	s := openStore(t)
	writeRaw(t, s, "T.conf", []byte("{"))
	if _, err := s.LoadConfig("T"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LoadConfig: got %v, want ErrCorrupt", err)
	}
	if err := s.SaveConfig("T", map[string]any{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadConfig("T")
	if err != nil {
		t.Fatal(err)
	}
	deepEqual(t, "LoadConfig after a fresh save", got, map[string]any{"a": "b"})
}

// failingWrite writes half of the data, then fails as a full disk does.
func failingWrite(f *os.File, data []byte) error {
	f.Write(data[:len(data)/2])
	return syscall.ENOSPC
}

func TestFailedWriteKeepsOldFile(t *testing.T) {
	s := openStore(t)
	tests := []struct {
		name  string
		file  string
		save  func() error
		check func(t *testing.T)
	}{
		{"config", "T.conf",
			func() error { return s.SaveConfig("T", map[string]any{"v": "new"}) },
			func(t *testing.T) {
				got, err := s.LoadConfig("T")
				if err != nil || got["v"] != "old" {
					t.Errorf("LoadConfig after failed save: got %v, %v, want v=old", got, err)
				}
			}},
		{"state", "T.state",
			func() error { return s.SaveState("T", map[string]any{"v": "new"}) },
			func(t *testing.T) {
				got, err := s.LoadState("T")
				if err != nil || got["v"] != "old" {
					t.Errorf("LoadState after failed save: got %v, %v, want v=old", got, err)
				}
			}},
		{"status", "T.status",
			func() error { return s.SaveStatus("T", Status{PID: 2}) },
			func(t *testing.T) {
				got, err := s.LoadStatus("T")
				if err != nil || got.PID != 1 {
					t.Errorf("LoadStatus after failed save: got %+v, %v, want pid 1", got, err)
				}
			}},
		{"failsafe", "T.failsafe",
			func() error { return s.WriteFailsafe("T", map[string]any{"v": "new"}) },
			func(t *testing.T) {
				got, err := s.ReadFailsafe("T")
				if err != nil || got["v"] != "old" {
					t.Errorf("ReadFailsafe after failed write: got %v, %v, want v=old", got, err)
				}
			}},
	}
	// Old versions, written normally.
	if err := errors.Join(
		s.SaveConfig("T", map[string]any{"v": "old"}),
		s.SaveState("T", map[string]any{"v": "old"}),
		s.SaveStatus("T", Status{PID: 1}),
		s.WriteFailsafe("T", map[string]any{"v": "old"}),
	); err != nil {
		t.Fatal(err)
	}
	s.writeData = failingWrite
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(s.Dir(), tt.file)
			before := readRaw(t, path)
			err := tt.save()
			if err == nil {
				t.Fatalf("save with a full disk: got nil, want an error")
			}
			for _, w := range []string{path, "no space left on device"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error: got %q, want it to contain %q", err, w)
				}
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("error: got %v, want it to wrap ENOSPC", err)
			}
			if after := readRaw(t, path); string(after) != string(before) {
				t.Errorf("%s after failed write: got %q, want the old %q", tt.file, after, before)
			}
			tt.check(t)
			noTemps(t, s.Dir())
		})
	}
}

func TestFailedRenameLeavesNoTemp(t *testing.T) {
	s := openStore(t)
	// A non-empty directory where the file should be: rename fails.
	blocker := filepath.Join(s.Dir(), "T.state")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := s.SaveState("T", map[string]any{"v": 1})
	if err == nil || !strings.Contains(err.Error(), blocker) {
		t.Errorf("SaveState over a directory: got %v, want an error naming %s", err, blocker)
	}
	noTemps(t, s.Dir())
	if _, err := s.LoadState("T"); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("LoadState of a directory: got %v, want a read error (not corrupt)", err)
	}
	if _, err := os.Stat(filepath.Join(blocker, "x")); err != nil {
		t.Errorf("directory in the way was disturbed: %v", err)
	}
}
