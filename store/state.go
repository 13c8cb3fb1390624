package store

import (
	"maps"
	"time"

	"github.com/multimodule/multimodule/message"
)

// StateMetaKey is the framework-owned key of a task's state under which
// SaveState records "save_ts".
const StateMetaKey = ".multimodule"

// SaveState saves a stateful task's state map to <Task>.state, with
// state[".multimodule"]["save_ts"] set to the current time in unix seconds
// (a float). The caller's map is not modified (save_ts goes into the
// file only), but it must not be modified by anyone else during the call.
// A nil map saves as a state holding only the save time.
func (s *Store) SaveState(task string, state map[string]any) error {
	path, err := s.path(task, stateExt)
	if err != nil {
		return err
	}
	top := make(map[string]any, len(state)+1)
	maps.Copy(top, state)
	meta := make(map[string]any, 1)
	if old, ok := state[StateMetaKey].(map[string]any); ok {
		maps.Copy(meta, old)
	}
	meta["save_ts"] = unixSeconds(time.Now())
	top[StateMetaKey] = meta
	return s.saveMap(path, "state", task, top)
}

// LoadState returns task's saved state, or (nil, nil) when it has none. A
// corrupt file is moved aside and reported with an error wrapping
// ErrCorrupt; the task then starts from an empty state.
func (s *Store) LoadState(task string) (map[string]any, error) {
	path, err := s.path(task, stateExt)
	if err != nil {
		return nil, err
	}
	return s.loadMap(path)
}

// SaveTS returns the time SaveState recorded in a loaded state, if any.
func SaveTS(state map[string]any) (time.Time, bool) {
	meta, _ := state[StateMetaKey].(map[string]any)
	f, ok := message.Float(meta["save_ts"])
	if !ok {
		return time.Time{}, false
	}
	return fromUnixSeconds(f), true
}

// unixSeconds is t as float unix seconds (microsecond precision survives).
func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// fromUnixSeconds converts float unix seconds back to a time.
func fromUnixSeconds(f float64) time.Time {
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9))
}
