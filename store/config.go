package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SaveConfig saves task's config map to <Task>.conf. A nil map saves as {}.
// A value that is not JSON-compatible is rejected with its path.
func (s *Store) SaveConfig(task string, cfg map[string]any) error {
	path, err := s.path(task, confExt)
	if err != nil {
		return err
	}
	return s.saveMap(path, "config", task, cfg)
}

// LoadConfig returns task's saved config, or (nil, nil) when it has none.
// A corrupt file is moved aside and reported with an error wrapping
// ErrCorrupt.
func (s *Store) LoadConfig(task string) (map[string]any, error) {
	path, err := s.path(task, confExt)
	if err != nil {
		return nil, err
	}
	return s.loadMap(path)
}

// LoadAllConfigs returns the saved config of every task (every *.conf
// file), keyed by task name. It loads all it can: a corrupt file is moved
// aside, a file whose name is not a valid task name is skipped, and each
// such problem is reported in the returned (joined) error, next to a map
// holding everything that did load. The map is never nil.
func (s *Store) LoadAllConfigs() (map[string]map[string]any, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return map[string]map[string]any{}, fmt.Errorf("store: list %s: %w", s.dir, err)
	}
	all := make(map[string]map[string]any)
	var errs []error
	for _, e := range entries {
		task, ok := strings.CutSuffix(e.Name(), confExt)
		if !ok || isTempName(e.Name()) {
			continue
		}
		path := filepath.Join(s.dir, e.Name())
		if e.IsDir() {
			errs = append(errs, fmt.Errorf("store: %s is a directory, not a config file: ignored", path))
			continue
		}
		if err := checkName(task); err != nil {
			errs = append(errs, fmt.Errorf("store: %s ignored: %w", path, err))
			continue
		}
		cfg, err := s.LoadConfig(task)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cfg != nil { // nil: removed since the listing
			all[task] = cfg
		}
	}
	return all, errors.Join(errs...)
}
