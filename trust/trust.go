// Package trust decides whether MultiModule may believe what it finds in
// its own directories (the state directory, the transport directory): a
// directory or file it reads to decide what to run, whom to signal or
// where to send messages must be controlled by the user running
// MultiModule and by nobody else.
//
// The rules (see docs/security.md):
//
//   - a trusted directory is a directory owned by the running user (the
//     effective uid) and writable by nobody else (no group or other write
//     bit); every directory above it is owned by root or the running user
//     and is writable by nobody else unless it has the sticky bit (as /tmp
//     has), so nobody else can rename it away and put another in its place;
//   - a trusted file is a regular file, never a symbolic link (files are
//     opened with O_NOFOLLOW), owned by the running user and writable by
//     nobody else.
//
// Checks happen when a directory is opened and when a file is opened,
// never per message.
package trust

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrUntrusted is wrapped by every error of this package about a
// directory or file that others could have written.
var ErrUntrusted = errors.New("not trusted")

// Error says what is wrong with a path and how to fix it.
type Error struct {
	What    string // "state dir", "transport dir", "state file", …
	Path    string // as the user gave it (or as it was found)
	Problem string // "is writable by others (mode 0777)"
	Fix     string // "run chmod 700 ./st2"
}

// Error reads "state dir ./st2 is writable by others (mode 0777): run
// chmod 700 ./st2".
func (e *Error) Error() string {
	msg := e.What + " " + e.Path + " " + e.Problem
	if e.Fix != "" {
		msg += ": " + e.Fix
	}
	return msg
}

// Unwrap returns ErrUntrusted.
func (e *Error) Unwrap() error { return ErrUntrusted }

// uid is the running user, whose files are trusted.
var uid = os.Geteuid()

// Dir checks that path (named in errors as what, e.g. "state dir") is a
// trusted directory, as are the directories above it. path may be
// relative and may go through symbolic links: the directories on the way
// and where the links lead are all checked.
func Dir(what, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, path)
	}
	if err := owned(what, path, fi, "chmod 700"); err != nil {
		return err
	}
	// The directories above, as written (a link on the way lives in one
	// of them) and as resolved (where the links lead).
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	for _, p := range []string{abs, real} {
		for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
			if err := ancestor(what, path, dir); err != nil {
				return err
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return nil
}

// ancestor checks a directory above a trusted one: owned by root or us,
// not writable by others unless sticky.
func ancestor(what, path, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s %s: directory above it %s: %w", what, path, dir, err)
	}
	o := ownerOf(fi)
	if o != 0 && o != uid {
		return &Error{What: what, Path: path,
			Problem: fmt.Sprintf("is inside %s, which is owned by %s (not by root or %s), who could replace it", dir, who(o), who(uid)),
			Fix:     "use a state dir in a directory that only root or " + userName(uid) + " controls"}
	}
	if w := writableBy(fi.Mode()); w != "" && fi.Mode()&fs.ModeSticky == 0 {
		return &Error{What: what, Path: path,
			Problem: fmt.Sprintf("is inside %s, which is writable by %s (mode %04o) without the sticky bit: they could replace it", dir, w, fi.Mode().Perm()),
			Fix:     fmt.Sprintf("run chmod go-w %s, or use a state dir elsewhere", dir)}
	}
	return nil
}

// owned checks fi (of path) is owned by us and not writable by others.
func owned(what, path string, fi fs.FileInfo, chmod string) error {
	if o := ownerOf(fi); o != uid {
		return &Error{What: what, Path: path,
			Problem: fmt.Sprintf("is owned by %s, not by %s who runs MultiModule", who(o), who(uid)),
			Fix:     fmt.Sprintf("check what is in it, then run chown %s %s (or remove it)", userName(uid), path)}
	}
	if w := writableBy(fi.Mode()); w != "" {
		return &Error{What: what, Path: path,
			Problem: fmt.Sprintf("is writable by %s (mode %04o)", w, fi.Mode().Perm()),
			Fix:     fmt.Sprintf("run %s %s", chmod, path)}
	}
	return nil
}

// File checks fi, the FileInfo of the open file path (from Stat on the
// open file, so it describes what was opened), is a trusted file.
func File(what, path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return &Error{What: what, Path: path, Problem: fmt.Sprintf("is not a regular file (%v)", fi.Mode().Type()),
			Fix: "remove it"}
	}
	return owned(what, path, fi, "chmod 600")
}

// Open opens path for reading without following a symbolic link
// (O_NOFOLLOW) and checks the file is trusted. A missing file is
// returned as the error of os.Open (fs.ErrNotExist); a symbolic link is
// refused with an *Error.
func Open(what, path string) (*os.File, fs.FileInfo, error) {
	return OpenFile(what, path, os.O_RDONLY, 0)
}

// OpenFile is Open with flags and a creation mode (for logs and lock
// files): O_NOFOLLOW is always added.
func OpenFile(what, path string, flag int, perm os.FileMode) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, Symlink(what, path)
		}
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := File(what, path, fi); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// Entry checks an entry of a trusted directory as listed (fi from Lstat):
// owned by us and, unless it is a symbolic link (whose mode means
// nothing; it is never followed), writable by nobody else.
func Entry(what, path string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		if o := ownerOf(fi); o != uid {
			return &Error{What: what, Path: path,
				Problem: fmt.Sprintf("is a symbolic link owned by %s, not by %s who runs MultiModule", who(o), who(uid)),
				Fix:     "remove it"}
		}
		return nil
	}
	chmod := "chmod 600"
	if fi.IsDir() {
		chmod = "chmod 700"
	}
	return owned(what, path, fi, chmod)
}

// Symlink is the error for a symbolic link where a file was expected.
func Symlink(what, path string) error {
	return &Error{What: what, Path: path,
		Problem: "is a symbolic link: refused (files here are never read or written through a link)",
		Fix:     "replace the link with the file itself"}
}

// ReadFile reads a trusted file whole (see Open).
func ReadFile(what, path string) ([]byte, error) {
	f, _, err := Open(what, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// writableBy names who besides the owner may write a file of mode m:
// "others", "its group", or "" for nobody.
func writableBy(m fs.FileMode) string {
	switch {
	case m&0o002 != 0:
		return "others"
	case m&0o020 != 0:
		return "its group"
	}
	return ""
}

// ownerOf returns the uid owning fi.
func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// userName names a user for a command line: its name, or its uid when
// it has none.
func userName(id int) string {
	if u, err := user.LookupId(strconv.Itoa(id)); err == nil {
		return u.Username
	}
	return strconv.Itoa(id)
}

// who names a user in a sentence: "nobody (uid 65534)".
func who(id int) string {
	return userName(id) + " (uid " + strconv.Itoa(id) + ")"
}
