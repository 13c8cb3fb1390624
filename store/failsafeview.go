package store

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// failsafeView is a Store's in-memory list of failsafed tasks (see
// KeepFailsafeView).
type failsafeView struct {
	mu      sync.Mutex
	on      bool
	every   time.Duration   // how often the directory is looked at
	names   map[string]bool // tasks with a .failsafe file, as last listed
	mine    map[string]bool // failsafes written through this Store and not cleared since
	checked time.Time       // when the directory was last looked at
	mtime   time.Time       // its modification time when last listed
	settled bool            // mtime was old enough when listed to be trusted
}

// racyAge is how recent a directory modification time may be and still
// hide a later change: a file created in the same clock tick as the
// listing leaves the time as it was.
const racyAge = time.Second

// KeepFailsafeView makes ReadFailsafe, for a task that has no
// <Task>.failsafe file, answer from memory instead of trying to open the
// file: a daemon asks for each of its thousand tasks every few seconds.
// Failsafes written and cleared through this Store are seen at once;
// files created or removed by anyone else (an operator's hand, another
// process) are seen once the directory's modification time shows the
// change, which is looked at every `every` at most. A task the view
// lists as failsafed is always read from its file, so a removed file is
// never reported.
func (s *Store) KeepFailsafeView(every time.Duration) {
	v := &s.fsView
	v.mu.Lock()
	defer v.mu.Unlock()
	v.on, v.every, v.names, v.mine, v.checked = true, every, nil, map[string]bool{}, time.Time{}
}

// mayBeFailsafed reports whether task may have a .failsafe file: always
// true without a view.
func (s *Store) mayBeFailsafed(task string) bool {
	v := &s.fsView
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.on {
		return true
	}
	s.refreshView(time.Now())
	if v.names == nil {
		return true // the directory could not be listed: ask the file
	}
	return v.names[task] || v.mine[task]
}

// refreshView lists the directory again when it may have changed since
// it was listed. s.fsView.mu held.
func (s *Store) refreshView(now time.Time) {
	v := &s.fsView
	if v.names != nil && now.Sub(v.checked) < v.every {
		return
	}
	v.checked = now
	fi, err := os.Stat(s.dir)
	if err != nil {
		v.names = nil
		return
	}
	if v.names != nil && v.settled && fi.ModTime().Equal(v.mtime) {
		return
	}
	f, err := os.Open(s.dir)
	if err != nil {
		v.names = nil
		return
	}
	entries, err := f.Readdirnames(-1) // unsorted, no stat: thousands of files
	f.Close()
	if err != nil {
		v.names = nil
		return
	}
	names := map[string]bool{}
	for _, e := range entries {
		if task, ok := strings.CutSuffix(e, failsafeExt); ok && checkName(task) == nil {
			names[task] = true
		}
	}
	v.names, v.mtime = names, fi.ModTime()
	v.settled = now.Sub(fi.ModTime()) > racyAge
}

// noteFailsafe records a failsafe about to be written (on) or just
// cleared through this Store: a listing of the directory made in between
// does not undo it.
func (s *Store) noteFailsafe(task string, on bool) {
	v := &s.fsView
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.on {
		return
	}
	if on {
		v.mine[task] = true
		return
	}
	delete(v.mine, task)
	delete(v.names, task)
}

// FailsafedNow returns the set of failsafed tasks as the view holds it
// (task → true), listing the directory when it may have changed; without
// a view (or when the directory cannot be listed) it lists the directory.
// The map is the caller's.
func (s *Store) FailsafedNow() (map[string]bool, error) {
	v := &s.fsView
	v.mu.Lock()
	if v.on {
		s.refreshView(time.Now())
		if v.names != nil {
			out := make(map[string]bool, len(v.names)+len(v.mine))
			for k := range v.names {
				out[k] = true
			}
			for k := range v.mine {
				// Written here, but perhaps removed by hand since.
				if _, err := os.Lstat(filepath.Join(s.dir, k+failsafeExt)); !out[k] && err == nil {
					out[k] = true
				}
			}
			v.mu.Unlock()
			return out, nil
		}
	}
	v.mu.Unlock()
	tasks, err := s.Failsafed()
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		out[t] = true
	}
	return out, nil
}
