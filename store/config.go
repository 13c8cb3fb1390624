package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/trust"
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

// SaveConfigs saves the configs of several tasks (task → config; a nil
// config saves as {}) and returns once all of them are durable, like as
// many SaveConfig calls, but as one group commit: every new file is
// written and synced first (the syncs in parallel, so the file system
// commits them together), then each is renamed into place, then the
// directory is synced once. Each file is replaced atomically — a crash at
// any moment leaves it old or new, never torn — but the group is not: a
// crash before SaveConfigs returns may leave some files new and others
// old. A file that holds the config already is left as it is (a restart
// restores every saved config). A task whose config cannot be saved (bad name, a value that is not
// JSON, a failed write) keeps its old file; the others are saved anyway,
// and the problems are returned joined.
func (s *Store) SaveConfigs(cfgs map[string]map[string]any) error {
	type job struct {
		task, path, tmp string
		data            []byte
		err             error
	}
	var jobs []*job
	var errs []error
	for _, task := range slices.Sorted(maps.Keys(cfgs)) {
		path, err := s.path(task, confExt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cfg := cfgs[task]
		if cfg == nil {
			cfg = map[string]any{}
		}
		n, err := message.Normalize(cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("store: save config of task %q: %w", task, err))
			continue
		}
		data, err := encodeJSON(map[string]any(n))
		if err != nil {
			errs = append(errs, fmt.Errorf("store: save config of task %q: encode: %w", task, err))
			continue
		}
		jobs = append(jobs, &job{task: task, path: path, data: data})
	}
	// Each file's lock, in name order (every other holder takes one
	// lock only), for the whole commit: saves of one file stay ordered.
	for _, j := range jobs {
		unlock := s.lockFile(j.path)
		defer unlock()
	}
	var wg sync.WaitGroup
	next := make(chan *job)
	for range min(len(jobs), groupCommitWorkers) {
		wg.Go(func() {
			for j := range next {
				if s.holds(j.path, j.data) {
					continue // a restart restoring the saved configs: nothing to write
				}
				j.tmp, j.err = s.writeTemp(j.path, j.data, true)
			}
		})
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	if s.commitStep != nil {
		s.commitStep("written")
	}
	installed := false
	for _, j := range jobs {
		if j.tmp == "" && j.err == nil {
			continue // unchanged
		}
		if j.err == nil {
			j.err = s.install(j.tmp, j.path)
		}
		if j.err != nil {
			errs = append(errs, &ConfigSaveError{Task: j.task, Err: j.err})
			continue
		}
		installed = true
		if s.commitStep != nil {
			s.commitStep("renamed " + j.task)
		}
	}
	if installed {
		if err := syncDir(s.dir); err != nil {
			// Every file renamed into place may be lost: none is durable.
			for _, j := range jobs {
				if j.tmp != "" && j.err == nil {
					errs = append(errs, &ConfigSaveError{Task: j.task, Err: fmt.Errorf("sync directory %s: %w", s.dir, err)})
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ConfigSaveError is how SaveConfigs reports a task whose config file it
// could not write, or not make durable: a failure of the file system
// (full, read-only, no permission), which a later try may not meet.
type ConfigSaveError struct {
	Task string
	Err  error
}

func (e *ConfigSaveError) Error() string {
	return fmt.Sprintf("store: save config of task %q: %v", e.Task, e.Err)
}

func (e *ConfigSaveError) Unwrap() error { return e.Err }

// FailedConfigs returns the tasks that err (from SaveConfigs) reports a
// ConfigSaveError for.
func FailedConfigs(err error) map[string]bool {
	failed := map[string]bool{}
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *ConfigSaveError:
			failed[e.Task] = true
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return failed
}

// holds reports whether the file path is a regular file holding exactly
// data already. Such a file is durable: every write syncs it before
// renaming it into place.
func (s *Store) holds(path string, data []byte) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len(data)) {
		return false
	}
	old, err := trust.ReadFile("state file", path)
	return err == nil && bytes.Equal(old, data)
}

// groupCommitWorkers bounds the files SaveConfigs writes and syncs at
// once.
const groupCommitWorkers = 32

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
