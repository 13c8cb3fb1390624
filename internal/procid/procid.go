// Package procid tells who a process is and what it uses, reading /proc
// through github.com/prometheus/procfs (the only place in MultiModule that
// reads /proc).
//
// A pid alone does not name a process: the kernel reuses pids. An Identity
// adds the process start time (clock ticks since boot, /proc/<pid>/stat
// field 22), which together with the pid is unique for the life of the
// machine, and the command line as a further check. Identity.Alive is
// true only for the very process that was recorded, never for a newer
// process that happens to have been given the same pid.
package procid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/prometheus/procfs"
)

// ErrNoProcess is wrapped by the errors of Of and UsageOf when no process
// has the given pid (it never existed, has exited, or the pid is invalid).
var ErrNoProcess = errors.New("procid: no such process")

// Identity names one process for the life of the machine.
type Identity struct {
	PID       int      // process id
	StartTime uint64   // start time in clock ticks since boot (/proc/<pid>/stat field 22)
	Cmdline   []string // argv as the process shows it; empty for zombies and kernel threads
}

// String formats the identity for logs, e.g. "pid 42 (start 123456)".
func (id Identity) String() string {
	return fmt.Sprintf("pid %d (start %d)", id.PID, id.StartTime)
}

// procFS is the /proc file system, opened once.
var procFS = sync.OnceValues(func() (procfs.FS, error) {
	p, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return procfs.FS{}, fmt.Errorf("procid: open %s: %w", procfs.DefaultMountPoint, err)
	}
	return p, nil
})

// Self returns the identity of the calling process.
func Self() (Identity, error) { return Of(os.Getpid()) }

// Of returns the identity of the process with the given pid. When there is
// no such process the error wraps ErrNoProcess. A zombie (exited, not yet
// reaped) still has an identity, with an empty command line; Alive reports
// it as dead.
func Of(pid int) (Identity, error) {
	id, _, err := read(pid)
	return id, err
}

// read returns the identity and the one-letter state of pid. It reads the
// stat file again after the command line, so that a pid reused between the
// two reads is not given another process' command line.
func read(pid int) (Identity, string, error) {
	p, err := proc(pid)
	if err != nil {
		return Identity{}, "", err
	}
	st, err := p.Stat()
	if err != nil {
		return Identity{}, "", wrap(pid, "read stat", err)
	}
	cmd, err := p.CmdLine()
	if err != nil {
		return Identity{}, "", wrap(pid, "read cmdline", err)
	}
	again, err := p.Stat()
	if err != nil {
		return Identity{}, "", wrap(pid, "read stat", err)
	}
	if again.Starttime != st.Starttime {
		return Identity{}, "", fmt.Errorf("%w: pid %d: the process was replaced while it was read", ErrNoProcess, pid)
	}
	return Identity{PID: pid, StartTime: st.Starttime, Cmdline: cmd}, again.State, nil
}

// proc returns the procfs handle of pid, or an error wrapping ErrNoProcess.
func proc(pid int) (procfs.Proc, error) {
	if pid <= 0 {
		return procfs.Proc{}, fmt.Errorf("%w: invalid pid %d", ErrNoProcess, pid)
	}
	pfs, err := procFS()
	if err != nil {
		return procfs.Proc{}, err
	}
	p, err := pfs.Proc(pid)
	if err != nil {
		return procfs.Proc{}, wrap(pid, "look up", err)
	}
	return p, nil
}

// wrap names pid and what was being done, and turns the errors that mean
// "the process is gone" into ErrNoProcess.
func wrap(pid int, doing string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: pid %d: %s: %v", ErrNoProcess, pid, doing, err)
	}
	return fmt.Errorf("procid: pid %d: %s: %w", pid, doing, err)
}

// Alive reports whether the process id names is still running: its pid
// exists, has the same start time, and (when both are known) the same
// command line. A pid reused by another process is never taken as alive,
// and a zombie (exited but not yet reaped) counts as dead. The zero
// Identity is never alive.
func (id Identity) Alive() bool {
	if id.PID <= 0 {
		return false
	}
	now, state, err := read(id.PID)
	if err != nil {
		return false
	}
	if state == "Z" || state == "X" || state == "x" {
		return false
	}
	if now.StartTime != id.StartTime {
		return false
	}
	if len(id.Cmdline) > 0 && len(now.Cmdline) > 0 && !slices.Equal(id.Cmdline, now.Cmdline) {
		return false
	}
	return true
}

// Usage is what a process uses at one moment.
type Usage struct {
	FDs        int     // open file descriptors
	Threads    int     // threads
	RSSBytes   uint64  // resident memory in bytes
	CPUSeconds float64 // user + system CPU time consumed so far, in seconds
	ReadBytes  uint64  // bytes the process caused to be read from storage so far
	WriteBytes uint64  // bytes the process caused to be written to storage so far
}

// UsageOf samples the usage of process pid. The I/O counters need
// privileges that are not always there (/proc/<pid>/io); when they cannot
// be read they stay 0 and no error is returned. When there is no such
// process the error wraps ErrNoProcess.
func UsageOf(pid int) (Usage, error) {
	p, err := proc(pid)
	if err != nil {
		return Usage{}, err
	}
	st, err := p.Stat()
	if err != nil {
		return Usage{}, wrap(pid, "read stat", err)
	}
	fds, err := p.FileDescriptorsLen()
	if err != nil {
		return Usage{}, wrap(pid, "count file descriptors", err)
	}
	u := Usage{
		FDs:        fds,
		Threads:    st.NumThreads,
		CPUSeconds: st.CPUTime(),
	}
	if rss := st.ResidentMemory(); rss > 0 {
		u.RSSBytes = uint64(rss)
	}
	if pio, err := p.IO(); err == nil {
		u.ReadBytes, u.WriteBytes = pio.ReadBytes, pio.WriteBytes
	}
	return u, nil
}
