// Package procid tells who a process is and what it uses, reading /proc
// (the only place in MultiModule that does) through
// github.com/prometheus/procfs, except for UsageOf, which the monitor
// calls for every process once a second and which parses its few fields
// itself.
//
// A pid alone does not name a process: the kernel reuses pids. An Identity
// adds the process start time (clock ticks since boot, /proc/<pid>/stat
// field 22), which together with the pid is unique for the life of the
// machine, and the command line as a further check. Identity.Alive is
// true only for the very process that was recorded, never for a newer
// process that happens to have been given the same pid.
package procid

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
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
//
// The monitor samples every process it watches once a second, so this
// reads the three files it needs itself, with one buffer and no
// formatted scanning, at about a quarter of procfs' cost; the open file
// descriptors are counted by the size the kernel reports for
// /proc/<pid>/fd (Linux 6.2 and later), or by listing it.
func UsageOf(pid int) (Usage, error) {
	if pid <= 0 {
		return Usage{}, fmt.Errorf("%w: invalid pid %d", ErrNoProcess, pid)
	}
	bp := statBufs.Get().(*[]byte)
	defer statBufs.Put(bp)
	dir := procRoot + "/" + strconv.Itoa(pid)
	data, err := readInto(dir+"/stat", bp)
	if err != nil {
		return Usage{}, wrap(pid, "read stat", err)
	}
	st, err := parseStat(data)
	if err != nil {
		return Usage{}, fmt.Errorf("procid: pid %d: read stat: %w", pid, err)
	}
	fds, err := countFDs(dir + "/fd")
	if err != nil {
		return Usage{}, wrap(pid, "count file descriptors", err)
	}
	u := Usage{
		FDs:        fds,
		Threads:    int(st.threads),
		CPUSeconds: float64(st.utime+st.stime) / userHZ,
		RSSBytes:   st.rssPages * uint64(os.Getpagesize()),
	}
	if data, err := readInto(dir+"/io", bp); err == nil {
		u.ReadBytes = ioField(data, "read_bytes: ")
		u.WriteBytes = ioField(data, "write_bytes: ")
	}
	return u, nil
}

// procRoot is where /proc is mounted.
const procRoot = procfs.DefaultMountPoint

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100
// on every Linux architecture we run on; procfs assumes the same).
const userHZ = 100

// statBufs holds the buffers UsageOf reads into (a stat file is a few
// hundred bytes; io about a hundred).
var statBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readInto reads the whole (small) file at path into *bp, growing it if
// needed, and returns the bytes read. It uses the system calls directly:
// an os.File would try (and fail) to register each /proc file with the
// network poller, a third of the cost.
func readInto(path string, bp *[]byte) ([]byte, error) {
	fd, err := retryEINTR(func() (int, error) { return syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		free := b[len(b):cap(b)]
		n, err := retryEINTR(func() (int, error) { return syscall.Read(fd, free) })
		if err != nil {
			*bp = b
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		b = b[:len(b)+n]
		if n == 0 {
			break
		}
	}
	*bp = b
	return b, nil
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// procStat is what UsageOf takes from /proc/<pid>/stat.
type procStat struct {
	utime, stime, threads, rssPages uint64
}

// parseStat parses the fields of /proc/<pid>/stat UsageOf needs (proc(5)):
// utime (14), stime (15), num_threads (20) and rss (24), counted from 1.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so the fields are counted from its last ')'.
func parseStat(data []byte) (procStat, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return procStat{}, fmt.Errorf("no command name in %q", data)
	}
	var st procStat
	field := 2 // the one that just ended
	rest := data[end+1:]
	for len(rest) > 0 && field < 24 {
		rest = bytes.TrimLeft(rest, " ")
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		tok := bytes.TrimRight(rest[:i], "\n")
		rest = rest[i:]
		field++
		var dst *uint64
		switch field {
		case 14:
			dst = &st.utime
		case 15:
			dst = &st.stime
		case 20:
			dst = &st.threads
		case 24:
			dst = &st.rssPages
		default:
			continue
		}
		v, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("field %d: %w", field, err)
		}
		*dst = uint64(max(v, 0)) // rss can read negative for a moment
	}
	if field < 24 {
		return procStat{}, fmt.Errorf("%d fields, want at least 24", field)
	}
	return st, nil
}

// ioField returns the value of the line of /proc/<pid>/io that starts
// with key, or 0.
func ioField(data []byte, key string) uint64 {
	for line := range bytes.Lines(data) {
		if v, ok := bytes.CutPrefix(line, []byte(key)); ok {
			n, _ := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}

// countFDs counts the entries of a /proc/<pid>/fd directory: the size the
// kernel reports for it (the number of open descriptors, since Linux
// 6.2), or, when that is 0 (older kernels), by listing it.
func countFDs(dir string) (int, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	if n := fi.Size(); n > 0 {
		return int(n), nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

// UIDs returns the real and effective user ids of process pid. When there
// is no such process the error wraps ErrNoProcess.
func UIDs(pid int) (real, effective int, err error) {
	p, err := proc(pid)
	if err != nil {
		return 0, 0, err
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0, 0, wrap(pid, "read status", err)
	}
	return int(st.UIDs[0]), int(st.UIDs[1]), nil
}

// HoldsFlock reports whether process pid holds a flock(2) lock on the
// file at path, as /proc/locks lists it: a FLOCK line with that pid and
// the file's device and inode. (For a lock inherited across fork the
// kernel lists the process that took it.)
func HoldsFlock(pid int, path string) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("procid: lock holders of %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("procid: lock holders of %s: no inode", path)
	}
	data, err := os.ReadFile(procRoot + "/locks")
	if err != nil {
		return false, fmt.Errorf("procid: %w", err)
	}
	return flockHeld(data, pid, uint64(st.Dev), st.Ino), nil
}

// flockHeld looks in the contents of /proc/locks for a FLOCK lock of pid
// on the file dev/ino. Lines read "1: FLOCK  ADVISORY  WRITE 42
// fe:00:9977953 0 EOF" (device major:minor in hex, inode in decimal);
// blocked waiters ("1: -> FLOCK …") are not holders.
func flockHeld(data []byte, pid int, dev, ino uint64) bool {
	want := fmt.Sprintf("%02x:%02x:%d", unixMajor(dev), unixMinor(dev), ino)
	spid := strconv.Itoa(pid)
	for line := range bytes.Lines(data) {
		f := bytes.Fields(line)
		if len(f) < 6 || string(f[1]) != "FLOCK" {
			continue
		}
		if string(f[4]) == spid && string(f[5]) == want {
			return true
		}
	}
	return false
}

// unixMajor and unixMinor split a Linux dev_t (glibc's encoding).
func unixMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func unixMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
