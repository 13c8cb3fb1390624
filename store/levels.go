package store

import (
	"fmt"
	"path/filepath"
)

// LevelsFile holds the monitor's current alert levels, written by the
// daemon after each evaluation and read by `multimodule status`.
const LevelsFile = "monitor-levels.json"

// Levels maps a task (or queue) to its current alert levels, keyed
// "<metric>/<window>" → level; only levels other than "ok" are kept.
type Levels map[string]map[string]string

// SaveLevels writes the monitor's current levels, unless the file holds
// them already (the daemon saves them every few seconds, and they seldom
// change). Like a status, the file only describes (the monitor rebuilds
// the levels after a restart): it is replaced atomically but not synced.
func (s *Store) SaveLevels(l Levels) error {
	if l == nil {
		l = Levels{}
	}
	data, err := encodeJSON(l)
	if err != nil {
		return fmt.Errorf("store: save levels: encode: %w", err)
	}
	path := filepath.Join(s.dir, LevelsFile)
	unlock := s.lockFile(path)
	defer unlock()
	if s.holds(path, data) {
		return nil
	}
	if err := s.writeVolatile(path, data); err != nil {
		return fmt.Errorf("store: save levels: %w", err)
	}
	return nil
}

// LoadLevels reads the monitor's levels (empty when none were saved).
func (s *Store) LoadLevels() (Levels, error) {
	m, err := s.loadMap(filepath.Join(s.dir, LevelsFile))
	if err != nil || m == nil {
		return Levels{}, err
	}
	out := Levels{}
	for task, v := range m {
		lv, ok := v.(map[string]any)
		if !ok {
			continue
		}
		out[task] = map[string]string{}
		for k, level := range lv {
			if s, ok := level.(string); ok {
				out[task][k] = s
			}
		}
	}
	return out, nil
}
