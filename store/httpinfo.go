package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// HTTPFile names the address of the daemon's HTTP listener while it
// listens (--http; useful with port 0).
const HTTPFile = "http.json"

// HTTPInfo is the content of HTTPFile.
type HTTPInfo struct {
	Addr string `json:"addr"` // host:port bound
	URL  string `json:"url"`  // http://host:port/
	PID  int    `json:"pid"`  // the daemon
}

// SaveHTTPInfo writes HTTPFile. Like the levels it only describes (the
// daemon writes it again at every start): replaced atomically, not synced.
func (s *Store) SaveHTTPInfo(info HTTPInfo) error {
	data, err := encodeJSON(info)
	if err != nil {
		return fmt.Errorf("store: save %s: encode: %w", HTTPFile, err)
	}
	path := filepath.Join(s.dir, HTTPFile)
	unlock := s.lockFile(path)
	defer unlock()
	if err := s.writeVolatile(path, data); err != nil {
		return fmt.Errorf("store: save %s: %w", HTTPFile, err)
	}
	return nil
}

// LoadHTTPInfo reads HTTPFile; nil when there is none.
func (s *Store) LoadHTTPInfo() (*HTTPInfo, error) {
	var info HTTPInfo
	found, err := s.loadFile(filepath.Join(s.dir, HTTPFile), func(data []byte) error {
		return json.Unmarshal(data, &info)
	})
	if err != nil || !found {
		return nil, err
	}
	return &info, nil
}

// RemoveHTTPInfo removes HTTPFile (the listener stopped).
func (s *Store) RemoveHTTPInfo() error {
	path := filepath.Join(s.dir, HTTPFile)
	unlock := s.lockFile(path)
	defer unlock()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: remove %s: %w", HTTPFile, err)
	}
	return nil
}
