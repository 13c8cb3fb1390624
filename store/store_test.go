package store

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOpen(t *testing.T) {
	t.Run("creates missing dirs 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "state")
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("Open(%s): %v", dir, err)
		}
		if s.Dir() != dir {
			t.Errorf("Dir: got %s, want %s", s.Dir(), dir)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("mode: got %v, want 0700", got)
		}
		if names := dirNames(t, dir); len(names) != 0 {
			t.Errorf("files left by Open: got %q, want none", names)
		}
	})
	t.Run("relative path made absolute", func(t *testing.T) {
		t.Chdir(t.TempDir())
		s, err := Open("state")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !filepath.IsAbs(s.Dir()) || filepath.Base(s.Dir()) != "state" {
			t.Errorf("Dir: got %s, want an absolute path ending in /state", s.Dir())
		}
	})
	t.Run("existing dir kept", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "X.conf"), []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		cfg, err := s.LoadConfig("X")
		if err != nil || cfg == nil {
			t.Errorf("LoadConfig(X): got %v, %v, want {}, nil", cfg, err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		want []string // substrings of the error
	}{
		{"empty path", "", []string{"empty path"}},
		{"path is a regular file", file, []string{file, "not a directory"}},
		{"path under a regular file", filepath.Join(file, "state"), []string{filepath.Join(file, "state"), "not a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.dir)
			if err == nil {
				t.Fatalf("Open(%q): got a store for %s, want an error", tt.dir, s.Dir())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open(%q) error: got %q, want it to contain %q", tt.dir, err, w)
				}
			}
		})
	}
	t.Run("permission denied", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores directory permissions; 'path under a regular file' covers the failure for root")
		}
		dir := filepath.Join(t.TempDir(), "ro")
		if err := os.Mkdir(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		_, err := Open(dir)
		if err == nil || !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), dir) {
			t.Errorf("Open(read-only dir): got %v, want an error saying %s is not writable", err, dir)
		}
	})
}

func TestTaskNames(t *testing.T) {
	s := openStore(t)
	bad := []struct{ name, task string }{
		{"empty", ""},
		{"leading dot", ".hidden"},
		{"dot dot", ".."},
		{"slash", "a/b"},
		{"escape", "../x"},
		{"space", "a b"},
		{"non-ASCII", "café"},
		{"NUL", "a\x00b"},
		{"too long", strings.Repeat("a", 201)},
	}
	ops := map[string]func(task string) error{
		"SaveConfig":    func(task string) error { return s.SaveConfig(task, nil) },
		"LoadConfig":    func(task string) error { _, err := s.LoadConfig(task); return err },
		"SaveState":     func(task string) error { return s.SaveState(task, nil) },
		"LoadState":     func(task string) error { _, err := s.LoadState(task); return err },
		"SaveStatus":    func(task string) error { return s.SaveStatus(task, Status{}) },
		"LoadStatus":    func(task string) error { _, err := s.LoadStatus(task); return err },
		"WriteFailsafe": func(task string) error { return s.WriteFailsafe(task, nil) },
		"ReadFailsafe":  func(task string) error { _, err := s.ReadFailsafe(task); return err },
		"ClearFailsafe": func(task string) error { return s.ClearFailsafe(task) },
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			for op, f := range ops {
				if err := f(tt.task); !errors.Is(err, ErrBadName) {
					t.Errorf("%s(%q): got %v, want an error wrapping ErrBadName", op, tt.task, err)
				}
			}
		})
	}
	if names := dirNames(t, s.Dir()); len(names) != 0 {
		t.Errorf("files written for bad names: got %q, want none", names)
	}
	good := []struct{ name, task string }{
		{"plain", "Example1"},
		{"all allowed characters", "a.B-c_9"},
		{"inner dots", "x..y"},
		{"looks like a file", "X.conf"},
		{"200 characters", strings.Repeat("a", 200)},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			for op, f := range ops {
				if err := f(tt.task); err != nil {
					t.Errorf("%s(%q): got %v, want nil", op, tt.task, err)
				}
			}
		})
	}
}

func TestConfigRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cfg  map[string]any
		want map[string]any
	}{
		{"empty", map[string]any{}, map[string]any{}},
		{"nil saves as empty", nil, map[string]any{}},
		{"tutorial", map[string]any{"outstr": "howdy"}, map[string]any{"outstr": "howdy"}},
		{
			"all JSON types",
			map[string]any{"s": "x", "b": true, "n": nil, "f": 1.5, "l": []any{int64(1), "two"}, "m": map[string]any{"k": false}},
			map[string]any{"s": "x", "b": true, "n": nil, "f": 1.5, "l": []any{int64(1), "two"}, "m": map[string]any{"k": false}},
		},
		{"exact integers", map[string]any{"big": int64(math.MaxInt64), "neg": int64(math.MinInt64), "huge": json.Number("123456789012345678901234567890")},
			map[string]any{"big": int64(math.MaxInt64), "neg": int64(math.MinInt64), "huge": json.Number("123456789012345678901234567890")}},
		{"Go types normalized", map[string]any{"i": 3, "u": uint32(7), "ss": []string{"a"}}, map[string]any{"i": int64(3), "u": int64(7), "ss": []any{"a"}}},
		{"unicode and HTML kept", map[string]any{"t": "é <b>&</b> ☃"}, map[string]any{"t": "é <b>&</b> ☃"}},
		{"framework keys", map[string]any{"is_external": true, "intervals": map[string]any{"save_state": int64(5)}},
			map[string]any{"is_external": true, "intervals": map[string]any{"save_state": int64(5)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			if err := s.SaveConfig("T", tt.cfg); err != nil {
				t.Fatalf("SaveConfig: %v", err)
			}
			got, err := s.LoadConfig("T")
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			deepEqual(t, "LoadConfig", got, tt.want)
			noTemps(t, s.Dir())
		})
	}
}

func TestFilesAreReadableJSON(t *testing.T) {
	s := openStore(t)
	if err := s.SaveConfig("T", map[string]any{"a": map[string]any{"b": int64(1)}, "html": "<&>"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), "T.conf")
	data := readRaw(t, path)
	want := "{\n  \"a\": {\n    \"b\": 1\n  },\n  \"html\": \"<&>\"\n}\n"
	if string(data) != want {
		t.Errorf("T.conf: got %q, want %q", data, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("T.conf mode: got %v, want 0600", got)
	}
}

func TestAbsentFiles(t *testing.T) {
	s := openStore(t)
	if cfg, err := s.LoadConfig("None"); cfg != nil || err != nil {
		t.Errorf("LoadConfig(absent): got %v, %v, want nil, nil", cfg, err)
	}
	if st, err := s.LoadState("None"); st != nil || err != nil {
		t.Errorf("LoadState(absent): got %v, %v, want nil, nil", st, err)
	}
	if st, err := s.LoadStatus("None"); st != nil || err != nil {
		t.Errorf("LoadStatus(absent): got %v, %v, want nil, nil", st, err)
	}
	if a, err := s.ReadFailsafe("None"); a != nil || err != nil {
		t.Errorf("ReadFailsafe(absent): got %v, %v, want nil, nil", a, err)
	}
	all, err := s.LoadAllConfigs()
	if err != nil || all == nil || len(all) != 0 {
		t.Errorf("LoadAllConfigs(empty dir): got %v, %v, want an empty map, nil", all, err)
	}
}

func TestSaveRejectsNonJSON(t *testing.T) {
	s := openStore(t)
	bad := map[string]any{"ok": 1, "deep": map[string]any{"ch": make(chan int)}}
	tests := []struct {
		name string
		save func() error
	}{
		{"config", func() error { return s.SaveConfig("T", bad) }},
		{"state", func() error { return s.SaveState("T", bad) }},
		{"failsafe", func() error { return s.WriteFailsafe("T", bad) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.save()
			if err == nil || !strings.Contains(err.Error(), "deep.ch") {
				t.Errorf("save: got %v, want an error naming the path deep.ch", err)
			}
		})
	}
	if names := dirNames(t, s.Dir()); len(names) != 0 {
		t.Errorf("files written: got %q, want none", names)
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := openStore(t)
	state := map[string]any{
		"ct":         int64(41),
		StateMetaKey: map[string]any{"kept": "yes", "save_ts": 1.0},
	}
	before := time.Now()
	if err := s.SaveState("Example1", state); err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	after := time.Now()
	deepEqual(t, "caller's state after SaveState", state, map[string]any{
		"ct":         int64(41),
		StateMetaKey: map[string]any{"kept": "yes", "save_ts": 1.0},
	})

	got, err := s.LoadState("Example1")
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if got["ct"] != int64(41) {
		t.Errorf("ct: got %#v, want int64(41)", got["ct"])
	}
	meta, _ := got[StateMetaKey].(map[string]any)
	if meta["kept"] != "yes" {
		t.Errorf(".multimodule.kept: got %#v, want \"yes\"", meta["kept"])
	}
	ts, ok := SaveTS(got)
	if !ok {
		t.Fatalf("save_ts: got %#v, want a number", meta["save_ts"])
	}
	if ts.Before(before.Add(-time.Millisecond)) || ts.After(after.Add(time.Millisecond)) {
		t.Errorf("save_ts: got %v, want between %v and %v", ts, before, after)
	}

	t.Run("nil state gets save_ts", func(t *testing.T) {
		if err := s.SaveState("Empty", nil); err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadState("Empty")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := SaveTS(got); !ok || len(got) != 1 {
			t.Errorf("LoadState(Empty): got %v, want only .multimodule.save_ts", got)
		}
	})
	t.Run("non-map .multimodule replaced", func(t *testing.T) {
		if err := s.SaveState("Odd", map[string]any{StateMetaKey: "junk"}); err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadState("Odd")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := SaveTS(got); !ok {
			t.Errorf("LoadState(Odd): got %v, want .multimodule.save_ts", got)
		}
	})
}

func TestStatusRoundTrip(t *testing.T) {
	s := openStore(t)
	in := Status{
		PID: 4242, StartTime: 987654321, Cmdline: []string{"multimodule", "-m", "Ext"},
		FDs: 12, Threads: 7, External: true, Stateful: true,
		RSSBytes: 1 << 20, CPUSeconds: 1.25, StartedTS: 1700000000.5,
		Task: "ignored", SaveTS: 1,
	}
	before := time.Now()
	if err := s.SaveStatus("Ext", in); err != nil {
		t.Fatalf("SaveStatus: %v", err)
	}
	got, err := s.LoadStatus("Ext")
	if err != nil {
		t.Fatalf("LoadStatus: %v", err)
	}
	if got.Saved().Before(before.Add(-time.Millisecond)) || got.Saved().After(time.Now().Add(time.Millisecond)) {
		t.Errorf("SaveTS: got %v, want the save time (after %v)", got.Saved(), before)
	}
	want := in
	want.Task, want.SaveTS = "Ext", got.SaveTS
	deepEqual(t, "LoadStatus", *got, want)
	deepEqual(t, "Identity", got.Identity(), Status{PID: 4242, StartTime: 987654321, Cmdline: in.Cmdline}.Identity())

	var raw map[string]any
	if err := json.Unmarshal(readRaw(t, filepath.Join(s.Dir(), "Ext.status")), &raw); err != nil {
		t.Fatalf("Ext.status is not JSON: %v", err)
	}
	for _, k := range []string{"task", "pid", "start_time", "cmdline", "save_ts", "fh_count", "thread_count", "is_external", "is_stateful"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("Ext.status: key %q missing (got %v)", k, raw)
		}
	}

	t.Run("nil cmdline saved as empty list", func(t *testing.T) {
		if err := s.SaveStatus("Bare", Status{PID: 1}); err != nil {
			t.Fatal(err)
		}
		if data := readRaw(t, filepath.Join(s.Dir(), "Bare.status")); !strings.Contains(string(data), `"cmdline": []`) {
			t.Errorf("Bare.status: got %s, want \"cmdline\": []", data)
		}
	})
}

func TestStatusRunning(t *testing.T) {
	s := openStore(t)
	self := Status{PID: os.Getpid()}
	id, err := selfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	self.StartTime, self.Cmdline = id.StartTime, id.Cmdline
	stale := self
	stale.StartTime++
	tests := []struct {
		name string
		st   Status
		want bool
	}{
		{"this process", self, true},
		{"same pid, other start time", stale, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.SaveStatus("T", tt.st); err != nil {
				t.Fatal(err)
			}
			got, err := s.LoadStatus("T")
			if err != nil {
				t.Fatal(err)
			}
			if got.Running() != tt.want {
				t.Errorf("Running: got %v, want %v", got.Running(), tt.want)
			}
		})
	}
}

func TestFailsafe(t *testing.T) {
	s := openStore(t)
	alert := map[string]any{"task": "Ext", "level": "failsafe", "value": 2.5, "summary": "cpu too high"}
	if err := s.WriteFailsafe("Ext", alert); err != nil {
		t.Fatalf("WriteFailsafe: %v", err)
	}
	if err := s.WriteFailsafe("Other", nil); err != nil {
		t.Fatalf("WriteFailsafe(nil alert): %v", err)
	}
	got, err := s.ReadFailsafe("Ext")
	if err != nil {
		t.Fatalf("ReadFailsafe: %v", err)
	}
	deepEqual(t, "ReadFailsafe", got, alert)
	if got, err := s.ReadFailsafe("Other"); err != nil || got == nil {
		t.Errorf("ReadFailsafe(Other): got %v, %v, want an empty map, nil", got, err)
	}
	list, err := s.Failsafed()
	if err != nil {
		t.Fatal(err)
	}
	deepEqual(t, "Failsafed", list, []string{"Ext", "Other"})

	for i := range 2 { // idempotent
		if err := s.ClearFailsafe("Ext"); err != nil {
			t.Fatalf("ClearFailsafe #%d: %v", i+1, err)
		}
	}
	if got, err := s.ReadFailsafe("Ext"); got != nil || err != nil {
		t.Errorf("ReadFailsafe after clear: got %v, %v, want nil, nil", got, err)
	}
	list, err = s.Failsafed()
	if err != nil {
		t.Fatal(err)
	}
	deepEqual(t, "Failsafed after clear", list, []string{"Other"})
}

func TestCorruptFailsafeStaysFailsafed(t *testing.T) {
	s := openStore(t)
	path := writeRaw(t, s, "Ext.failsafe", []byte(`{"level": "fail`))
	got, err := s.ReadFailsafe("Ext")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadFailsafe(corrupt): got error %v, want one wrapping ErrCorrupt naming %s", err, path)
	}
	if got == nil || got["corrupt"] != true {
		t.Errorf("ReadFailsafe(corrupt): got %v, want a stand-in alert with corrupt=true", got)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("corrupt failsafe file: got %v, want it left in place", err)
	}
	list, err := s.Failsafed()
	if err != nil {
		t.Fatal(err)
	}
	deepEqual(t, "Failsafed", list, []string{"Ext"})
	if err := s.ClearFailsafe("Ext"); err != nil {
		t.Fatalf("ClearFailsafe: %v", err)
	}
	if list, _ := s.Failsafed(); len(list) != 0 {
		t.Errorf("Failsafed after clear: got %v, want none", list)
	}
}

func TestTasks(t *testing.T) {
	s := openStore(t)
	for name, data := range map[string]string{
		"A.conf":                    "{}",
		"A.state":                   "{}",
		"B.status":                  "{}",
		"C.failsafe":                "{}",
		"D.conf.conf":               "{}", // task "D.conf"
		"E.state.corrupt":           "x",
		"E.state.corrupt.20240101Z": "x",
		".F.conf.tmp-123":           "{}",
		"multimodule.lock":          "1",
		"README":                    "x",
		"bad name.conf":             "{}",
	} {
		writeRaw(t, s, name, []byte(data))
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "G.conf"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := s.Tasks()
	if err != nil {
		t.Fatal(err)
	}
	deepEqual(t, "Tasks", got, []string{"A", "B", "C", "D.conf"})
}

func TestLoadAllConfigs(t *testing.T) {
	s := openStore(t)
	for _, task := range []string{"Router", "Example1", "Example2"} {
		if err := s.SaveConfig(task, map[string]any{"name": task}); err != nil {
			t.Fatal(err)
		}
	}
	broken := writeRaw(t, s, "Broken.conf", []byte(`{"name": `))
	writeRaw(t, s, "bad name.conf", []byte(`{}`))
	writeRaw(t, s, ".Router.conf.tmp-1", []byte(`{"partial`)) // an in-progress write elsewhere
	writeRaw(t, s, "Example1.state", []byte(`{}`))

	all, err := s.LoadAllConfigs()
	want := map[string]map[string]any{
		"Router":   {"name": "Router"},
		"Example1": {"name": "Example1"},
		"Example2": {"name": "Example2"},
	}
	deepEqual(t, "LoadAllConfigs", all, want)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LoadAllConfigs error: got %v, want one wrapping ErrCorrupt", err)
	}
	for _, w := range []string{broken, "bad name.conf", "ignored"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("LoadAllConfigs error: got %q, want it to mention %q", err, w)
		}
	}
	if _, err := os.Stat(broken + ".corrupt"); err != nil {
		t.Errorf("Broken.conf moved aside: got %v, want %s.corrupt to exist", err, broken)
	}
	all, err = s.LoadAllConfigs()
	if len(all) != 3 || errors.Is(err, ErrCorrupt) {
		t.Errorf("second LoadAllConfigs: got %d configs, %v; want 3 and no corrupt file", len(all), err)
	}
}

func TestStaleTempsRemovedOnOpen(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".T.state.tmp-111")
	fresh := filepath.Join(dir, ".T.state.tmp-222")
	keep := filepath.Join(dir, "T.state")
	for _, p := range []string{stale, fresh, keep} {
		if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-staleTempAge - time.Minute)
	for _, p := range []string{stale, keep} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	got := dirNames(t, dir)
	slices.Sort(got)
	deepEqual(t, "files after Open", got, []string{".T.state.tmp-222", "T.state"})
}

// TestLoadStatusIfChanged: a status is read again only when its file was
// replaced; an absent file reads as nil, and its removal as a change.
func TestLoadStatusIfChanged(t *testing.T) {
	s := openStore(t)
	load := func(stamp StatusStamp) (*Status, StatusStamp, bool) {
		t.Helper()
		st, now, changed, err := s.LoadStatusIfChanged("Ext", stamp)
		if err != nil {
			t.Fatalf("LoadStatusIfChanged: %v", err)
		}
		return st, now, changed
	}
	st, stamp, changed := load(StatusStamp{})
	if st != nil || changed {
		t.Fatalf("no file: got %v, changed %v; want nil, unchanged", st, changed)
	}
	if err := s.SaveStatus("Ext", Status{PID: 1}); err != nil {
		t.Fatal(err)
	}
	st, stamp, changed = load(stamp)
	if !changed || st == nil || st.PID != 1 {
		t.Fatalf("after a save: got %+v, changed %v; want pid 1, changed", st, changed)
	}
	if st, _, changed := load(stamp); changed || st != nil {
		t.Fatalf("same file: got %+v, changed %v; want nothing read", st, changed)
	}
	// The same size, written again (a new file renamed over the old one).
	if err := s.SaveStatus("Ext", Status{PID: 2}); err != nil {
		t.Fatal(err)
	}
	st, stamp, changed = load(stamp)
	if !changed || st == nil || st.PID != 2 {
		t.Fatalf("after a second save: got %+v, changed %v; want pid 2, changed", st, changed)
	}
	if err := os.Remove(filepath.Join(s.Dir(), "Ext.status")); err != nil {
		t.Fatal(err)
	}
	if st, _, changed := load(stamp); !changed || st != nil {
		t.Fatalf("removed: got %+v, changed %v; want nil, changed", st, changed)
	}
}
