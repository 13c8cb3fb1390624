package supervise

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/procid"
)

// slowPoll is how often an adopted process is checked when pidfds are not
// available.
const slowPoll = 250 * time.Millisecond

// openPidfd opens a non-blocking pidfd for pid. It is a variable so that
// tests can take pidfds away and exercise the fallback.
var openPidfd = func(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.EINVAL) {
		// PIDFD_NONBLOCK came in Linux 5.10; pidfds in 5.3.
		if fd, err = unix.PidfdOpen(pid, 0); err == nil {
			if err = unix.SetNonblock(fd, true); err != nil {
				unix.Close(fd)
				return -1, err
			}
		}
	}
	return fd, err
}

// pidfdUnsupported reports whether err from pidfd_open means the kernel (or
// a seccomp filter) does not offer pidfds at all. pidfd_open needs no
// privilege, so EPERM can only come from such a filter.
func pidfdUnsupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)
}

// ErrNotOurs is wrapped by the errors of Adopt about a live process that
// is not the one expected: it runs as another user, has another command
// line, or does not hold the expected lock.
var ErrNotOurs = errors.New("supervise: not our process")

// Expect is what a process must be for Adopt to take it on, besides
// running as this user: a status file only names a process, and a
// process it names is signalled (up to SIGKILL) once adopted.
type Expect struct {
	// ArgvSuffix, when set, must end the process' command line
	// (["-m", task] for an external task).
	ArgvSuffix []string
	// LockPath, when set, is a file the process must hold a flock(2)
	// on (an external holds <state>/<task>.lock for its whole life):
	// that proves it is the process of that state directory, which
	// nothing else can pretend to be.
	LockPath string
}

// Adopt takes on a running process that is not our child, typically an
// external task left running by a previous life of the daemon, by the
// identity saved in its status. It refuses, with an error wrapping ErrGone,
// an identity that is not alive: the process exited, or its pid now names
// another process (different start time or command line). It refuses,
// with an error wrapping ErrNotOurs, a live process whose real or
// effective user is not ours (the effective uid), or that is not what
// want says. Exit is noticed through a pidfd; see the package doc for the
// fallback without pidfds.
func Adopt(id procid.Identity, want Expect) (*Process, error) {
	if !id.Alive() {
		return nil, fmt.Errorf("%w: adopt %v: no live process has this identity (it exited, or the pid now names another process)", ErrGone, id)
	}
	if err := checkOurs(id, want); err != nil {
		return nil, err
	}
	return adopt(id, true)
}

// checkOurs checks the live process id is ours and what want says.
func checkOurs(id procid.Identity, want Expect) error {
	real, eff, err := procid.UIDs(id.PID)
	if err != nil {
		return fmt.Errorf("%w: adopt %v: %v", ErrGone, id, err)
	}
	if me := os.Geteuid(); real != me || eff != me {
		return fmt.Errorf("%w: adopt %v: it runs as uid %d (effective %d), not as uid %d", ErrNotOurs, id, real, eff, me)
	}
	now, err := procid.Of(id.PID)
	if err != nil {
		return fmt.Errorf("%w: adopt %v: %v", ErrGone, id, err)
	}
	if n := len(want.ArgvSuffix); n > 0 && (len(now.Cmdline) < n || !slices.Equal(now.Cmdline[len(now.Cmdline)-n:], want.ArgvSuffix)) {
		return fmt.Errorf("%w: adopt %v: its command line %q does not end with %q", ErrNotOurs, id, now.Cmdline, want.ArgvSuffix)
	}
	if want.LockPath != "" {
		held, err := procid.HoldsFlock(id.PID, want.LockPath)
		if err != nil {
			return fmt.Errorf("%w: adopt %v: %v", ErrNotOurs, id, err)
		}
		if !held {
			return fmt.Errorf("%w: adopt %v: it does not hold the lock %s", ErrNotOurs, id, want.LockPath)
		}
	}
	return nil
}

// adopt is Adopt without the checks of Expect and the user; verify=false
// skips the identity checks too, which only tests do, to build a handle
// whose identity does not match its pid.
func adopt(id procid.Identity, verify bool) (*Process, error) {
	if verify && !id.Alive() {
		return nil, fmt.Errorf("%w: adopt %v: no live process has this identity (it exited, or the pid now names another process)", ErrGone, id)
	}
	id.Cmdline = slices.Clone(id.Cmdline)
	p := &Process{id: id, done: make(chan struct{}), started: time.Now()}
	fd, err := openPidfd(id.PID)
	switch {
	case err == nil:
	case pidfdUnsupported(err):
		go p.pollAlive()
		return p, nil
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("%w: adopt %v: it exited", ErrGone, id)
	default:
		return nil, fmt.Errorf("supervise: adopt %v: pidfd_open: %w", id, err)
	}
	pfd, err := newPidfd(fd, id.PID)
	if err != nil {
		return nil, fmt.Errorf("supervise: adopt %v: %w", id, err)
	}
	// The pidfd names whatever process had the pid when it was opened.
	// If the identity is still alive now, that was our process.
	if verify && !id.Alive() {
		pfd.close()
		return nil, fmt.Errorf("%w: adopt %v: it exited while being adopted", ErrGone, id)
	}
	p.pidfd = pfd
	go p.watchPidfd()
	return p, nil
}

// watchPidfd waits, in the runtime poller, for the pidfd to report the
// exit. Should the poller be unable to wait on it, it falls back to the
// slow poll.
func (p *Process) watchPidfd() {
	if err := p.pidfd.waitExit(); err != nil {
		p.pollAlive()
		return
	}
	p.finish(nil)
}

// pollAlive checks the identity every slowPoll until it is no longer alive.
func (p *Process) pollAlive() {
	tick := time.NewTicker(slowPoll)
	defer tick.Stop()
	for p.id.Alive() {
		<-tick.C
	}
	p.finish(nil)
}

// pidfd is an open pidfd registered with the Go runtime poller, so that
// waiting for it parks a goroutine, not a thread, and closing it is safe
// while a signal is being sent through it.
type pidfd struct {
	file *os.File
	raw  syscall.RawConn
}

// newPidfd wraps the non-blocking pidfd fd (of pid); it takes ownership of
// fd.
func newPidfd(fd, pid int) (*pidfd, error) {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd of pid %d: %w", pid, err)
	}
	return &pidfd{file: f, raw: raw}, nil
}

// waitExit blocks until the process has exited. A pidfd becomes readable
// (POLLIN) when its process exits, whether or not it has been reaped.
func (d *pidfd) waitExit() error {
	return d.raw.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err == nil && n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0
		}
	})
}

// signal sends sig through the pidfd. After close it returns an error
// wrapping os.ErrClosed.
func (d *pidfd) signal(sig syscall.Signal) error {
	var err error
	if cerr := d.raw.Control(func(fd uintptr) {
		err = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); cerr != nil {
		return os.ErrClosed // Control fails only on a closed file
	}
	return err
}

// close releases the pidfd; a send in progress finishes first.
func (d *pidfd) close() { _ = d.file.Close() }
