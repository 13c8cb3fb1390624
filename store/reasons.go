package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// ReasonsFile holds why configured tasks do not run (unknown task, load
// error, back-off), written by the daemon and read by `multimodule
// status`.
const ReasonsFile = "task-reasons.json"

// Reason says why a configured task does not run now.
type Reason struct {
	Reason string  `json:"reason"`           // "unknown task", "load error", "back-off"
	Detail string  `json:"detail,omitempty"` // the error, the exit status
	Until  float64 `json:"until,omitempty"`  // unix seconds: no new try before
}

// Reasons maps a task to why it does not run; tasks that run are absent.
type Reasons map[string]Reason

// SaveReasons writes the reasons, unless the file holds them already.
// Like the levels, the file only describes (the daemon rebuilds it): it
// is replaced atomically but not synced.
func (s *Store) SaveReasons(r Reasons) error {
	if r == nil {
		r = Reasons{}
	}
	data, err := encodeJSON(r)
	if err != nil {
		return fmt.Errorf("store: save task reasons: encode: %w", err)
	}
	path := filepath.Join(s.dir, ReasonsFile)
	unlock := s.lockFile(path)
	defer unlock()
	if s.holds(path, data) {
		return nil
	}
	if err := s.writeVolatile(path, data); err != nil {
		return fmt.Errorf("store: save task reasons: %w", err)
	}
	return nil
}

// LoadReasons reads the reasons (empty when none were saved).
func (s *Store) LoadReasons() (Reasons, error) {
	r := Reasons{}
	_, err := s.loadFile(filepath.Join(s.dir, ReasonsFile), func(data []byte) error {
		return json.Unmarshal(data, &r)
	})
	return r, err
}
