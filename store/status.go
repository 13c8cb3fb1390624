package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/procid"
)

// Status is the process status of a task, saved in <Task>.status: which
// process hosts it and what that process uses. Internal tasks carry the
// daemon's process.
type Status struct {
	Task       string   `json:"task"`                  // the task's name; set by SaveStatus
	PID        int      `json:"pid"`                   // the hosting process
	StartTime  uint64   `json:"start_time"`            // its start time, clock ticks since boot (procid.Identity)
	Cmdline    []string `json:"cmdline"`               // its command line
	SaveTS     float64  `json:"save_ts"`               // when this status was saved, unix seconds; set by SaveStatus
	FDs        int      `json:"fh_count"`              // open file handles of the process
	Threads    int      `json:"thread_count"`          // threads of the process
	External   bool     `json:"is_external"`           // hosted in its own process (not the daemon)
	Shared     bool     `json:"shared,omitempty"`      // the process hosts other tasks too (the daemon): its usage is theirs as well
	Stateful   bool     `json:"is_stateful"`           // the task keeps state
	RSSBytes   uint64   `json:"rss_bytes,omitempty"`   // resident memory of the process
	CPUSeconds float64  `json:"cpu_seconds,omitempty"` // CPU time the process used so far
	StartedTS  float64  `json:"started_ts,omitempty"`  // when the process started hosting the task, unix seconds
	// Counters are the task's admin counters as its external process
	// counts them (passed/emitted messages, failures), for the daemon's
	// monitor; empty for internal tasks, whose counters the daemon holds.
	Counters map[string]uint64 `json:"counters,omitempty"`
	// CoPID is the pid of the task's co-process (an exec task hosted by
	// this process), which the monitor samples too; 0 when none.
	CoPID int `json:"co_pid,omitempty"`
	// NATS is the NATS server or cluster the process uses (its URLs,
	// without credentials); empty for the embedded bus.
	NATS string `json:"nats,omitempty"`
}

// Identity returns the identity of the process the status names, for
// checking that it is still running (Identity().Alive()).
func (st Status) Identity() procid.Identity {
	return procid.Identity{PID: st.PID, StartTime: st.StartTime, Cmdline: st.Cmdline}
}

// Running reports whether the process the status names is still the same
// live process (not merely a live pid).
func (st Status) Running() bool { return st.Identity().Alive() }

// Saved returns SaveTS as a time.
func (st Status) Saved() time.Time { return fromUnixSeconds(st.SaveTS) }

// SaveStatus saves st to <Task>.status, setting st.Task to task and
// st.SaveTS to the current time. The write is atomic but not synced to
// disk (see the package doc): a status describes running processes, and
// none of them survives an operating-system crash, the only thing that
// can lose an unsynced write.
func (s *Store) SaveStatus(task string, st Status) error {
	path, err := s.path(task, statusExt)
	if err != nil {
		return err
	}
	st.Task = task
	st.SaveTS = unixSeconds(time.Now())
	if st.Cmdline == nil {
		st.Cmdline = []string{}
	}
	data, err := encodeJSON(st)
	if err != nil {
		return fmt.Errorf("store: save status of task %q: encode: %w", task, err)
	}
	unlock := s.lockFile(path)
	defer unlock()
	if err := s.writeVolatile(path, data); err != nil {
		return fmt.Errorf("store: save status of task %q: %w", task, err)
	}
	return nil
}

// LoadStatus returns task's saved status, or (nil, nil) when it has none.
// A corrupt file is moved aside and reported with an error wrapping
// ErrCorrupt.
func (s *Store) LoadStatus(task string) (*Status, error) {
	path, err := s.path(task, statusExt)
	if err != nil {
		return nil, err
	}
	var st Status
	found, err := s.loadFile(path, func(data []byte) error {
		st = Status{}
		return decodeStatus(data, &st)
	})
	if err != nil || !found {
		return nil, err
	}
	return &st, nil
}

// StatusStamp identifies the version of a status file that
// LoadStatusIfChanged read; the zero StatusStamp is none.
type StatusStamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

// LoadStatusIfChanged is LoadStatus for a caller that reads the same
// status again and again (the daemon's monitor reads every external's
// once a second; they rewrite it every 2 s): when the file is still the
// one stamp names — the same inode, size and modification time; a status
// file is replaced whole, by a rename — it reads nothing and returns
// changed false. Otherwise it returns what LoadStatus returns (nil when
// there is no file), the new stamp, and changed true.
func (s *Store) LoadStatusIfChanged(task string, stamp StatusStamp) (st *Status, now StatusStamp, changed bool, err error) {
	path, err := s.path(task, statusExt)
	if err != nil {
		return nil, StatusStamp{}, true, err
	}
	fi, err := os.Lstat(path) // never through a link: LoadStatus refuses one
	if err == nil {
		now = StatusStamp{size: fi.Size(), mtime: fi.ModTime()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			now.ino = sys.Ino
		}
		if now == stamp && stamp != (StatusStamp{}) {
			return nil, stamp, false, nil
		}
	} else if errors.Is(err, fs.ErrNotExist) && stamp == (StatusStamp{}) {
		return nil, stamp, false, nil
	}
	// Read even when the stat failed: LoadStatus reports the error.
	st, err = s.LoadStatus(task)
	return st, now, true, err
}

// decodeStatus decodes exactly one JSON object into st. It checks the
// shape first as for every other file (so the problems read the same),
// then decodes the fields: unknown fields are ignored (files written by
// newer versions still load); a field of the wrong type is an error.
func decodeStatus(data []byte, st *Status) error {
	if _, err := decodeMap(data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, st); err != nil {
		return err
	}
	return nil
}
