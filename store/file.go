package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/trust"
)

// ErrCorrupt is wrapped by the error a Load method returns for a file that
// cannot be decoded (torn, truncated, not JSON, wrong shape). The file has
// been moved aside; the caller should start from empty.
var ErrCorrupt = errors.New("store: corrupt file")

// CorruptError describes a corrupt file and what was done with it. It
// wraps ErrCorrupt and the decoding error.
type CorruptError struct {
	Path    string // the corrupt file
	MovedTo string // where it now is (<Path>.corrupt); "" if it was not moved
	Err     error  // what is wrong with its contents
	MoveErr error  // why it could not be moved aside, when MovedTo is ""
}

// Error names the file, the problem and where the file went.
func (e *CorruptError) Error() string {
	msg := fmt.Sprintf("store: corrupt file %s: %v", e.Path, e.Err)
	switch {
	case e.MovedTo != "":
		msg += "; moved aside to " + e.MovedTo
	case e.MoveErr != nil:
		msg += "; could not move it aside: " + e.MoveErr.Error()
	}
	return msg
}

// Unwrap returns ErrCorrupt and the decoding error.
func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// errReplaced says a corrupt file was replaced (by a writer in another
// process) between reading it and moving it aside.
var errReplaced = errors.New("the file was replaced while it was being read")

// corruptSuffix is added to a corrupt file's name when it is moved aside.
const corruptSuffix = ".corrupt"

// tempInfix marks temporary files: "." + <file name> + tempInfix + random.
const tempInfix = ".tmp-"

// isTempName reports whether name is one of our temporary files.
func isTempName(name string) bool {
	return strings.HasPrefix(name, ".") && (strings.Contains(name, tempInfix) || strings.HasPrefix(name, ".probe-"))
}

// encodeJSON renders v as indented JSON with a final newline, readable
// with jq or less.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// saveMap normalizes m (nil saves as {}) and writes it atomically to path.
// what and task only name the operation in errors.
func (s *Store) saveMap(path, what, task string, m map[string]any) error {
	if m == nil {
		m = map[string]any{}
	}
	n, err := message.Normalize(m)
	if err != nil {
		return fmt.Errorf("store: save %s of task %q: %w", what, task, err)
	}
	data, err := encodeJSON(map[string]any(n))
	if err != nil {
		return fmt.Errorf("store: save %s of task %q: encode: %w", what, task, err)
	}
	unlock := s.lockFile(path)
	defer unlock()
	if err := s.writeAtomic(path, data); err != nil {
		return fmt.Errorf("store: save %s of task %q: %w", what, task, err)
	}
	return nil
}

// writeAtomic replaces path with data, durably: temporary file in the
// same directory, write, fsync, rename, fsync the directory. On failure
// before the rename the old file is untouched and the temporary file
// removed. The caller holds the file's lock.
func (s *Store) writeAtomic(path string, data []byte) error {
	tmp, err := s.writeTemp(path, data, true)
	if err != nil {
		return err
	}
	if err := s.install(tmp, path); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// writeVolatile replaces path with data atomically but without syncing
// anything: readers (in any process) see the old file or the new one,
// never a mix, and so does anyone after the writing process dies (the
// kernel keeps what it wrote); after an operating-system crash the file
// may be old, missing or empty (then it is moved aside when loaded). For
// files that describe running processes only (status): none of them
// survives an operating-system crash either. The caller holds the file's
// lock.
func (s *Store) writeVolatile(path string, data []byte) error {
	tmp, err := s.writeTemp(path, data, false)
	if err != nil {
		return err
	}
	return s.install(tmp, path)
}

// writeTemp writes data to a new temporary file next to path, synced
// when sync is set, and returns its name. On failure nothing is left
// behind.
func (s *Store) writeTemp(path string, data []byte, sync bool) (string, error) {
	f, err := os.CreateTemp(s.dir, "."+filepath.Base(path)+tempInfix+"*")
	if err != nil {
		return "", fmt.Errorf("write %s: create temporary file: %w", path, err)
	}
	tmp := f.Name()
	fail := func(step string, err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %s: %w", path, step, err)
	}
	write := s.writeData
	if write == nil {
		write = func(f *os.File, data []byte) error { _, err := f.Write(data); return err }
	}
	if err := write(f, data); err != nil {
		return fail("write", err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fail("sync", err)
		}
	}
	if err := f.Close(); err != nil {
		return fail("close", err)
	}
	return tmp, nil
}

// install renames the temporary file tmp over path; on failure it
// removes tmp.
func (s *Store) install(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: rename into place: %w", path, err)
	}
	return nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadFile reads path and decodes it. It returns found=false and no error
// when the file does not exist. A file that decode rejects is moved aside
// and reported as a *CorruptError. If the file is replaced by a new
// version meanwhile, the new version is read instead.
func (s *Store) loadFile(path string, decode func([]byte) error) (found bool, err error) {
	unlock := s.lockFile(path)
	defer unlock()
	for attempt := 0; ; attempt++ {
		data, fi, err := readFile(path)
		if err != nil {
			var te *trust.Error
			if errors.As(err, &te) {
				return false, fmt.Errorf("store: %w", err) // names the file already
			}
			return false, fmt.Errorf("store: read %s: %w", path, err)
		}
		if fi == nil {
			return false, nil
		}
		derr := decode(data)
		if derr == nil {
			return true, nil
		}
		ce := &CorruptError{Path: path, Err: describe(data, derr)}
		ce.MovedTo, ce.MoveErr = s.moveAside(path, fi)
		if errors.Is(ce.MoveErr, errReplaced) && attempt < 3 {
			continue
		}
		return true, ce
	}
}

// readFile returns the contents of path and the FileInfo of what was
// read; both nil, and no error, when it does not exist. It never reads
// through a symbolic link, and refuses a file another user owns or could
// write (an error wrapping trust.ErrUntrusted): such a file was not
// written by MultiModule.
func readFile(path string) ([]byte, os.FileInfo, error) {
	f, fi, err := trust.Open("state file", path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, err
	}
	return data, fi, nil
}

// describe turns a decoding error into the problem an operator reads.
func describe(data []byte, err error) error {
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return fmt.Errorf("empty file (%d bytes)", len(data))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("truncated: the JSON ends early, at byte %d", len(data))
	}
	return err
}

// moveAside renames the corrupt file path (as read: fi) to
// path.corrupt, first renaming an older path.corrupt to
// path.corrupt.<its mtime>, so path.corrupt is always the newest.
func (s *Store) moveAside(path string, fi os.FileInfo) (string, error) {
	cur, err := os.Lstat(path) // readFile never follows a link
	if err != nil {
		return "", err
	}
	if !os.SameFile(cur, fi) {
		return "", errReplaced
	}
	aside := path + corruptSuffix
	if old, err := os.Lstat(aside); err == nil {
		older := freeName(aside + "." + old.ModTime().UTC().Format("20060102T150405.000000000Z"))
		if err := os.Rename(aside, older); err != nil {
			return "", fmt.Errorf("keep older %s: %w", aside, err)
		}
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	_ = syncDir(s.dir) // best effort: the move is done either way
	return aside, nil
}

// freeName returns name, or name-N for the first N that does not exist.
func freeName(name string) string {
	candidate := name
	for i := 1; ; i++ {
		if _, err := os.Lstat(candidate); errors.Is(err, fs.ErrNotExist) {
			return candidate
		}
		candidate = name + "-" + strconv.Itoa(i)
	}
}

// decodeMap decodes a JSON object into canonical message types.
func decodeMap(data []byte) (map[string]any, error) {
	m, err := message.Unmarshal(data)
	if err != nil {
		return nil, err
	}
	return map[string]any(m), nil
}

// loadMap loads a JSON object file; (nil, nil) when it does not exist.
func (s *Store) loadMap(path string) (map[string]any, error) {
	var m map[string]any
	found, err := s.loadFile(path, func(data []byte) error {
		var err error
		m, err = decodeMap(data)
		return err
	})
	if err != nil || !found {
		return nil, err
	}
	return m, nil
}
