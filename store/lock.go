package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/trust"
)

// LockFileName is the file in the state directory whose lock marks the
// running daemon; it holds the daemon's pid while it runs.
const LockFileName = "multimodule.lock"

// holderWait bounds how long LockDaemon waits for a lock holder that has
// just taken the lock to write its pid.
const holderWait = time.Second

// AlreadyRunningError is returned by LockDaemon when another daemon (or
// another LockDaemon in this process) holds the state directory.
type AlreadyRunningError struct {
	PID  int    // the holder's pid; 0 when it could not be read
	Path string // the lock file
}

// Error is "already running under <pid>", the words operators know.
func (e *AlreadyRunningError) Error() string {
	if e.PID <= 0 {
		return "already running under an unknown pid"
	}
	return "already running under " + strconv.Itoa(e.PID)
}

// LockDaemon makes this process the one daemon of the state directory: it
// takes an exclusive flock on <dir>/multimodule.lock and writes our pid
// into it. When another process (or an earlier LockDaemon in this one)
// holds it, the error is an *AlreadyRunningError naming the holder's pid.
//
// Hold the lock for the life of the process. The kernel releases it when
// the process dies, however it dies, so a crashed daemon never blocks the
// next one. The descriptor is close-on-exec: processes the daemon starts
// (external tasks) do not inherit the lock. release unlocks and clears the
// pid; calling it again does nothing. The file itself is never removed
// (removing a lock file lets two processes lock two different files).
func (s *Store) LockDaemon() (release func() error, err error) {
	return s.flockFile(filepath.Join(s.dir, LockFileName))
}

// LockExternal makes this process the one external process of task: the
// same as LockDaemon, on <dir>/<task>.lock, so two external processes of
// one task never run at once (a daemon and a restarted daemon racing to
// start it, say).
func (s *Store) LockExternal(task string) (release func() error, err error) {
	path, err := s.ExternalLockPath(task)
	if err != nil {
		return nil, err
	}
	return s.flockFile(path)
}

// ExternalLockPath is the file LockExternal locks for task: the process
// holding it is the task's external process of this state directory
// (what adopting a process named in a status file checks).
func (s *Store) ExternalLockPath(task string) (string, error) {
	return s.path(task, ".lock")
}

func (s *Store) flockFile(path string) (release func() error, err error) {
	f, _, err := trust.OpenFile("lock file", path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open lock: %w", err)
	}
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &AlreadyRunningError{PID: holderPID(path), Path: path}
		}
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	if err := writePID(f); err != nil {
		f.Close() // closing releases the lock
		return nil, fmt.Errorf("store: write pid to %s: %w", path, err)
	}
	var (
		once sync.Once
		rerr error
	)
	release = func() error {
		once.Do(func() {
			err := errors.Join(f.Truncate(0), flock(f, syscall.LOCK_UN), f.Close())
			if err != nil {
				rerr = fmt.Errorf("store: release daemon lock %s: %w", path, err)
			}
		})
		return rerr
	}
	return release, nil
}

// flock applies flock(2) to f, retrying when interrupted by a signal.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// writePID replaces the contents of the lock file with our pid.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return err
	}
	return f.Sync()
}

// holderPID reads the pid of the lock's holder. A holder that has just
// taken the lock may not have written it yet, so an empty file is read
// again for a short while.
func holderPID(path string) int {
	deadline := time.Now().Add(holderWait)
	for {
		data, err := trust.ReadFile("lock file", path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
				return pid
			}
		}
		if time.Now().After(deadline) {
			return 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}
