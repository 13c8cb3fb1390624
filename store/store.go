// Package store keeps MultiModule's state directory: for each task its
// config (<Task>.conf), its state (<Task>.state), its process status
// (<Task>.status) and, while it is failsafed, the alert that caused it
// (<Task>.failsafe); plus the lock file that allows one daemon per
// directory (multimodule.lock). It is the only code that touches these
// files.
//
// Every file is indented JSON that an operator can read with jq; integers
// round-trip exactly. Every write is atomic: the data goes to a temporary
// file in the same directory and is renamed over the old file, so readers,
// and anyone after a crash, see the old file or the new one, never a mix;
// a failed write leaves the old file as it was. A torn, truncated or
// otherwise corrupt file is never fatal: the Load methods move it aside to
// <file>.corrupt and return an error wrapping ErrCorrupt, and the caller
// starts from empty.
//
// Durability. Configs, states and failsafe marks (written and cleared)
// are durable when the call returns: the temporary file is synced before
// the rename and the directory after it, so an operating-system crash or
// a power loss leaves the last version written. SaveConfigs does this for
// many configs as one group commit (each file atomic, the group not).
// Status files and the monitor's levels only describe running processes
// and are rebuilt: they are renamed into place without any sync, which an
// operating-system crash may undo (older file, none, or an empty one,
// moved aside when read); a process crash, even SIGKILL, loses nothing.
//
// A Store is safe for concurrent use by many goroutines, and several
// processes (the daemon and its external tasks) may use one directory at
// the same time: readers always see either the old or the new version of a
// file, never a mix.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/trust"
)

// File name suffixes, one per kind of file a task has.
const (
	confExt     = ".conf"
	stateExt    = ".state"
	statusExt   = ".status"
	failsafeExt = ".failsafe"
)

// taskExts are the suffixes that make a file belong to a task.
var taskExts = []string{confExt, stateExt, statusExt, failsafeExt}

// maxTaskName is the longest task name allowed (the queue name limit).
const maxTaskName = 200

// staleTempAge is how old a leftover temporary file must be before Open
// removes it; younger ones may belong to a write in progress in another
// process.
const staleTempAge = 10 * time.Minute

// ErrBadName is wrapped by every error about an invalid task name.
var ErrBadName = errors.New("store: invalid task name")

// Store is one state directory. Create it with Open.
type Store struct {
	dir string

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per file path: orders saves, loads and moves of one file

	fsView failsafeView // see KeepFailsafeView

	// commitStep, when set, is called by SaveConfigs after each step of
	// its commit ("written": every temporary file synced; "renamed
	// <task>": one file in place); tests look at the directory there,
	// as a crash at that moment would leave it.
	commitStep func(step string)

	// writeData writes the contents of a temporary file; tests replace it
	// to simulate a full disk. nil means f.Write.
	writeData func(f *os.File, data []byte) error
}

// Open opens the state directory dir, creating it (mode 0700, with its
// parents) when missing. It fails with an error naming dir when dir is not
// a directory or is not writable, and with an error wrapping
// trust.ErrUntrusted when another user could have written in it: dir is
// not owned by the running user or is writable by its group or others
// (trust.Dir), or a file in it is (checkEntries). Temporary files left behind by a crash
// in the middle of a write are removed once they are old enough not to
// belong to a write still in progress.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("store: open state directory: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: open state directory %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("store: create state directory %q: %w", abs, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("store: open state directory %q: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("store: state directory %q is not a directory", abs)
	}
	if err := trust.Dir("state dir", dir); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := checkEntries(dir, abs); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	probe, err := os.CreateTemp(abs, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("store: state directory %q is not writable: %w", abs, err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return nil, fmt.Errorf("store: state directory %q: remove probe file: %w", abs, err)
	}
	s := &Store{dir: abs, locks: make(map[string]*sync.Mutex)}
	s.removeStaleTemps(time.Now().Add(-staleTempAge))
	return s, nil
}

// maxReported bounds the untrusted files one error lists.
const maxReported = 5

// checkEntries refuses a state directory holding a file that another
// user owns or could write (or a link another user made): it was not
// written by MultiModule and must not be believed (a status naming a
// process to adopt and kill, a failsafe, a log that is a link, …). Our
// own symbolic links may stay: nothing reads or writes through one.
// Subdirectories (the transport dir) are checked by their owners.
func checkEntries(dir, abs string) error {
	entries, err := os.ReadDir(abs)
	if err != nil {
		return fmt.Errorf("list state dir %s: %w", dir, err)
	}
	var bad []string
	n := 0
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed since the listing
		}
		if err := trust.Entry("file", filepath.Join(dir, e.Name()), fi); err != nil {
			n++
			if len(bad) < maxReported {
				bad = append(bad, err.Error())
			}
		}
	}
	if n == 0 {
		return nil
	}
	more := ""
	if n > len(bad) {
		more = fmt.Sprintf("; and %d more", n-len(bad))
	}
	return &trust.Error{What: "state dir", Path: dir,
		Problem: fmt.Sprintf("holds %d file(s) that MultiModule did not write or that others could change: %s%s", n, strings.Join(bad, "; "), more)}
}

// Dir returns the absolute path of the state directory.
func (s *Store) Dir() string { return s.dir }

// Tasks returns, sorted, every task that has at least one file (config,
// state, status or failsafe) in the directory.
func (s *Store) Tasks() ([]string, error) {
	return s.tasksWith(taskExts...)
}

// tasksWith lists, sorted and without duplicates, the tasks that have a
// regular file (or symlink) with one of the given suffixes. Hidden files (temporary
// files), moved-aside corrupt files and names that are not valid task
// names are skipped.
func (s *Store) tasksWith(exts ...string) ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", s.dir, err)
	}
	var tasks []string
	for _, e := range entries {
		if !e.Type().IsRegular() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		task, ok := taskOf(e.Name(), exts)
		if ok && !slices.Contains(tasks, task) {
			tasks = append(tasks, task)
		}
	}
	slices.Sort(tasks)
	return tasks, nil
}

// taskOf returns the task a file name belongs to when it ends in one of
// exts and the rest is a valid task name.
func taskOf(name string, exts []string) (string, bool) {
	for _, ext := range exts {
		if task, ok := strings.CutSuffix(name, ext); ok && checkName(task) == nil {
			return task, true
		}
	}
	return "", false
}

// path returns the file of task with suffix ext, after checking the name.
func (s *Store) path(task, ext string) (string, error) {
	if err := checkName(task); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, task+ext), nil
}

// checkName applies the queue name rule to a task name: 1–200 characters
// of ASCII letters, digits, '_', '-' and '.', not starting with '.'. So a
// task name is always a plain file name inside the directory, never a
// hidden file, "." or "..".
func checkName(task string) error {
	switch {
	case task == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(task) > maxTaskName:
		return fmt.Errorf("%w %.20q…: %d characters, at most %d allowed", ErrBadName, task, len(task), maxTaskName)
	case task[0] == '.':
		return fmt.Errorf("%w %q: must not start with \".\"", ErrBadName, task)
	}
	for i := 0; i < len(task); i++ {
		c := task[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' {
			continue
		}
		return fmt.Errorf("%w %q: character %q at byte %d is not allowed (letters, digits, \"_\", \"-\", \".\")", ErrBadName, task, rune(c), i)
	}
	return nil
}

// lockFile locks the mutex of one file path and returns its unlock.
func (s *Store) lockFile(path string) func() {
	s.mu.Lock()
	m, ok := s.locks[path]
	if !ok {
		m = new(sync.Mutex)
		s.locks[path] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// removeStaleTemps deletes temporary files last modified before cutoff.
// Failures are ignored: leftovers are harmless, only untidy.
func (s *Store) removeStaleTemps(cutoff time.Time) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !isTempName(e.Name()) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue
		}
		_ = os.Remove(filepath.Join(s.dir, e.Name()))
	}
}
