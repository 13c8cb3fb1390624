package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// configsOnDisk reads every <Task>.conf of dir as a reader (or a daemon
// restarted after a crash) would: task → raw contents.
func configsOnDisk(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range dirNames(t, dir) {
		if task, ok := strings.CutSuffix(n, confExt); ok && !isTempName(n) {
			out[task] = string(readRaw(t, filepath.Join(dir, n)))
		}
	}
	return out
}

// TestSaveConfigsCrashAtEveryStep looks at the directory after every step
// of a group commit — what a crash at that moment leaves — and checks
// that every config is whole: the old version or the new one (nothing,
// for a task that had none), never torn; and that once SaveConfigs has
// returned every file is new.
func TestSaveConfigsCrashAtEveryStep(t *testing.T) {
	s := openStore(t)
	const n = 40
	old := map[string]map[string]any{}
	for i := range n / 2 { // half the tasks have a config already
		old[fmt.Sprintf("T%02d", i)] = map[string]any{"v": "old", "i": i}
	}
	if err := s.SaveConfigs(old); err != nil {
		t.Fatal(err)
	}
	oldRaw := configsOnDisk(t, s.Dir())
	if len(oldRaw) != n/2 {
		t.Fatalf("first commit: %d files, want %d", len(oldRaw), n/2)
	}
	cfgs := map[string]map[string]any{}
	for i := range n {
		cfgs[fmt.Sprintf("T%02d", i)] = map[string]any{"v": "new", "i": i, "pad": strings.Repeat("x", 100*i)}
	}
	var steps []string
	s.commitStep = func(step string) {
		steps = append(steps, step)
		for task, raw := range configsOnDisk(t, s.Dir()) {
			if raw == oldRaw[task] {
				continue
			}
			m, err := decodeMap([]byte(raw))
			if err != nil || m["v"] != "new" || m["pad"] != cfgs[task]["pad"] {
				t.Errorf("after step %q: %s.conf is neither old nor new: %q (%v)", step, task, raw, err)
			}
		}
	}
	if err := s.SaveConfigs(cfgs); err != nil {
		t.Fatal(err)
	}
	if len(steps) != n+1 {
		t.Errorf("commit steps: got %d (%v), want %d (written, then one rename per file)", len(steps), steps, n+1)
	}
	if steps[0] != "written" {
		t.Errorf("first step %q, want \"written\"", steps[0])
	}
	for task, cfg := range cfgs {
		got, err := s.LoadConfig(task)
		if err != nil || got["v"] != "new" || got["pad"] != cfg["pad"] {
			t.Errorf("after SaveConfigs: %s = %v, %v; want the new config", task, got, err)
		}
	}
	noTemps(t, s.Dir())
}

// TestSaveConfigsLeavesUnchangedFiles: a config saved again unchanged
// (a restart restores every saved config) is not rewritten.
func TestSaveConfigsLeavesUnchangedFiles(t *testing.T) {
	s := openStore(t)
	cfgs := map[string]map[string]any{"A": {"x": 1}, "B": {"y": []any{"z"}}, "C": nil}
	if err := s.SaveConfigs(cfgs); err != nil {
		t.Fatal(err)
	}
	inode := func(task string) uint64 {
		fi, err := os.Stat(filepath.Join(s.Dir(), task+confExt))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	before := map[string]uint64{"A": inode("A"), "B": inode("B"), "C": inode("C")}
	cfgs["B"] = map[string]any{"y": "changed"}
	var renamed []string
	s.commitStep = func(step string) {
		if task, ok := strings.CutPrefix(step, "renamed "); ok {
			renamed = append(renamed, task)
		}
	}
	if err := s.SaveConfigs(cfgs); err != nil {
		t.Fatal(err)
	}
	deepEqual(t, "files rewritten", renamed, []string{"B"})
	for _, task := range []string{"A", "C"} {
		if inode(task) != before[task] {
			t.Errorf("%s.conf was rewritten though its config did not change", task)
		}
	}
	if got, _ := s.LoadConfig("B"); got["y"] != "changed" {
		t.Errorf("B: got %v, want the changed config", got)
	}
}

// TestSaveConfigsPartialFailure: tasks that cannot be saved keep their
// old file and are reported, each by name; the others are saved.
func TestSaveConfigsPartialFailure(t *testing.T) {
	s := openStore(t)
	if err := s.SaveConfig("Old", map[string]any{"v": "old"}); err != nil {
		t.Fatal(err)
	}
	err := s.SaveConfigs(map[string]map[string]any{
		"Good":     {"v": 1},
		"bad name": {"v": 1},
		"NotJSON":  {"f": func() {}},
	})
	for _, w := range []string{`"bad name"`, `task "NotJSON"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("SaveConfigs error: got %v, want it to mention %s", err, w)
		}
	}
	if got, _ := s.LoadConfig("Good"); got["v"] != int64(1) {
		t.Errorf("Good: got %v, want it saved", got)
	}
	// A full disk: every file of the group keeps its old version.
	s.writeData = failingWrite
	err = s.SaveConfigs(map[string]map[string]any{"Old": {"v": "new"}, "New": {"v": "new"}})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), `task "Old"`) || !strings.Contains(err.Error(), `task "New"`) {
		t.Errorf("SaveConfigs on a full disk: got %v, want ENOSPC naming both tasks", err)
	}
	if got, _ := s.LoadConfig("Old"); got["v"] != "old" {
		t.Errorf("Old after a failed save: got %v, want the old config", got)
	}
	if got, _ := s.LoadConfig("New"); got != nil {
		t.Errorf("New after a failed save: got %v, want none", got)
	}
	noTemps(t, s.Dir())
}

// TestFailsafeView: with the view, ReadFailsafe answers from memory for
// tasks that have no failsafe file, and still sees failsafes written and
// cleared through the store at once, and files an operator creates or
// removes by hand once the directory shows the change.
func TestFailsafeView(t *testing.T) {
	s := openStore(t)
	if err := s.WriteFailsafe("Before", map[string]any{"summary": "before"}); err != nil {
		t.Fatal(err)
	}
	s.KeepFailsafeView(0) // look at the directory at every call
	check := func(when string, want map[string]bool) {
		t.Helper()
		for _, task := range []string{"Before", "Mine", "ByHand", "Never"} {
			fs, err := s.ReadFailsafe(task)
			if err != nil || (fs != nil) != want[task] {
				t.Errorf("%s: ReadFailsafe(%s) = %v, %v; want failsafed %v", when, task, fs, err, want[task])
			}
		}
		now, err := s.FailsafedNow()
		if err != nil {
			t.Fatal(err)
		}
		for task := range want {
			if !want[task] {
				delete(want, task)
			}
		}
		deepEqual(t, when+": FailsafedNow", now, want)
	}
	check("at start", map[string]bool{"Before": true})
	if err := s.WriteFailsafe("Mine", map[string]any{"summary": "mine"}); err != nil {
		t.Fatal(err)
	}
	check("written", map[string]bool{"Before": true, "Mine": true})
	writeRaw(t, s, "ByHand.failsafe", []byte(`{"summary": "by hand"}`))
	check("made by hand", map[string]bool{"Before": true, "Mine": true, "ByHand": true})
	for _, task := range []string{"Before", "Mine"} {
		if err := os.Remove(filepath.Join(s.Dir(), task+failsafeExt)); err != nil {
			t.Fatal(err)
		}
	}
	check("removed by hand", map[string]bool{"ByHand": true})
	if err := s.ClearFailsafe("ByHand"); err != nil {
		t.Fatal(err)
	}
	check("cleared", map[string]bool{})
}
