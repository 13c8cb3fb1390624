package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/multimodule/multimodule/trust"
)

// WriteFailsafe marks task as failsafed by writing <Task>.failsafe holding
// the alert that caused it. The task stays failsafed until ClearFailsafe.
func (s *Store) WriteFailsafe(task string, alert map[string]any) error {
	path, err := s.path(task, failsafeExt)
	if err != nil {
		return err
	}
	s.noteFailsafe(task, true) // before the file exists: ReadFailsafe reads it from then on
	return s.saveMap(path, "failsafe", task, alert)
}

// ReadFailsafe returns the alert that failsafed task, or (nil, nil) when
// the task is not failsafed.
//
// Unlike the Load methods it never moves a corrupt file aside: the file's
// presence is what keeps a crash-looping task stopped, so a damaged one
// must not silently release it. For a corrupt file it returns a stand-in
// alert (with "summary" and "corrupt" keys) together with an error
// wrapping ErrCorrupt; the task stays failsafed until ClearFailsafe. A
// failsafe file that is a symbolic link is not read (see readFile): it
// gives the same kind of stand-in, with an error wrapping
// trust.ErrUntrusted.
func (s *Store) ReadFailsafe(task string) (map[string]any, error) {
	path, err := s.path(task, failsafeExt)
	if err != nil {
		return nil, err
	}
	if !s.mayBeFailsafed(task) {
		return nil, nil
	}
	unlock := s.lockFile(path)
	defer unlock()
	data, fi, err := readFile(path)
	if errors.Is(err, trust.ErrUntrusted) {
		// A link (or a file of someone else's) is not read, but its
		// presence still keeps the task stopped, like a damaged file.
		stand := map[string]any{
			"summary": fmt.Sprintf("task %s is failsafed; its failsafe file is refused: %v", task, err),
			"corrupt": true,
		}
		return stand, fmt.Errorf("store: read failsafe of task %q: %w", task, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read failsafe of task %q: %w", task, err)
	}
	if fi == nil {
		return nil, nil
	}
	alert, err := decodeMap(data)
	if err != nil {
		ce := &CorruptError{Path: path, Err: describe(data, err)}
		stand := map[string]any{
			"summary": fmt.Sprintf("task %s is failsafed; its failsafe file is unreadable: %v", task, ce.Err),
			"corrupt": true,
		}
		return stand, ce
	}
	return alert, nil
}

// ClearFailsafe removes task's failsafe mark, so it can run again. It is
// not an error if the task was not failsafed.
func (s *Store) ClearFailsafe(task string) error {
	path, err := s.path(task, failsafeExt)
	if err != nil {
		return err
	}
	unlock := s.lockFile(path)
	defer unlock()
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.noteFailsafe(task, false)
			return nil
		}
		return fmt.Errorf("store: clear failsafe of task %q: %w", task, err)
	}
	s.noteFailsafe(task, false)
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("store: clear failsafe of task %q: sync %s: %w", task, s.dir, err)
	}
	return nil
}

// Failsafed returns, sorted, every task that is failsafed (has a
// <Task>.failsafe file).
func (s *Store) Failsafed() ([]string, error) {
	return s.tasksWith(failsafeExt)
}
