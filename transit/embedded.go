package transit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/trust"
)

// Files of the embedded bus in the transport directory.
const (
	BusInfoFile  = "bus.json"   // BusInfo of the running bus, written once it is ready
	BusTokenFile = "token"      // the auth token, mode 0600
	BusLogFile   = "bus.log"    // stdout and stderr of a bus started by Open
	busRunLock   = "bus.lock"   // held (flock) by the running bus for its lifetime
	busStartLock = "start.lock" // held by a client while it starts a bus
	busStoreDir  = "jetstream"  // the JetStream store
)

// busChildEnv is set in the environment of a bus command started by Open.
// A process that has it never starts a bus itself: if BusCommand is not
// really `multimodule bus` (a test binary, say), starting it cannot recurse.
const busChildEnv = "MULTIMODULE_BUS_CHILD"

// BusInfo is the content of bus.json: where the embedded bus listens and
// which process it is.
type BusInfo struct {
	URL       string `json:"url"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // field 22 of /proc/<pid>/stat (clock ticks since boot)
}

// ReadBusInfo reads dir/bus.json. It never reads through a symbolic
// link, and refuses (an error wrapping trust.ErrUntrusted) a file another
// user owns or could write: a client would send its messages to the bus
// that file names.
func ReadBusInfo(dir string) (BusInfo, error) {
	var bi BusInfo
	b, err := trust.ReadFile("bus file", filepath.Join(dir, BusInfoFile))
	if err != nil {
		return bi, err
	}
	if err := json.Unmarshal(b, &bi); err != nil {
		return bi, fmt.Errorf("transit: %s: %w", filepath.Join(dir, BusInfoFile), err)
	}
	return bi, nil
}

// Alive reports whether the process bus.json names still runs (same pid
// and the same process start time, so a reused pid does not count).
func (bi BusInfo) Alive() bool {
	if bi.PID <= 0 {
		return false
	}
	st, err := processStartTime(bi.PID)
	return err == nil && st == bi.StartTime
}

// processStartTime returns the start time of process pid in clock ticks
// since boot: with the pid, the identity of a process. A zombie counts as
// gone. (Read through procid, which owns /proc.)
func processStartTime(pid int) (uint64, error) {
	id, err := procid.Of(pid)
	if err != nil {
		return 0, fmt.Errorf("transit: %w", err)
	}
	if !id.Alive() {
		return 0, fmt.Errorf("transit: process %d is gone", pid)
	}
	return id.StartTime, nil
}

// readToken reads dir/token, with the checks of ReadBusInfo.
func readToken(dir string) (string, error) {
	b, err := trust.ReadFile("bus token", filepath.Join(dir, BusTokenFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// liveBus returns the bus info if a bus is running for dir and accepts
// TCP connections. The error is for a bus.json or token that must not be
// believed (trust.ErrUntrusted): then no bus may be used or started.
func liveBus(dir string) (BusInfo, bool, error) {
	bi, c, err := dialLiveBus(dir)
	if c != nil {
		c.Close()
	}
	return bi, c != nil, err
}

// dialLiveBus is liveBus that keeps the connection that showed the bus
// live (nil when it is not), for the caller to use or close: a client
// that connects right after the check needs no second connection.
func dialLiveBus(dir string) (BusInfo, net.Conn, error) {
	bi, err := ReadBusInfo(dir)
	if errors.Is(err, trust.ErrUntrusted) {
		return bi, nil, err
	}
	if err != nil || !bi.Alive() {
		return bi, nil, nil
	}
	if _, err := readToken(dir); errors.Is(err, trust.ErrUntrusted) {
		return bi, nil, err
	}
	u, err := url.Parse(bi.URL)
	if err != nil {
		return bi, nil, nil
	}
	c, err := dialBusTCP(u.Host, time.Second)
	if err != nil {
		return bi, nil, nil
	}
	return bi, c, nil
}

// dialBusTCP opens a TCP connection to the bus at address (a variable:
// the tests count the connections a client makes).
var dialBusTCP = func(address string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", address, timeout)
}

// busStarter finds or starts the embedded bus of one transport directory.
type busStarter struct {
	dir string
	cmd []string
	log *slog.Logger
	// noStart: only find a running bus; never start one (ErrNoBus).
	noStart bool
	// started is the pid of the bus this starter started and saw ready
	// (0: none); see Transit.StartedBus.
	started atomic.Int64
	// spare is the connection with which Open found the bus live, for
	// the client's first dial (busDialer): a new process connects to the
	// bus once, not once to look and once more to use it.
	spare atomic.Pointer[net.Conn]
}

// keep stores c for the next dial (closing a connection kept before).
func (s *busStarter) keep(c net.Conn) {
	if old := s.spare.Swap(&c); old != nil {
		(*old).Close()
	}
}

// takeSpare returns the connection kept for the next dial, or nil.
func (s *busStarter) takeSpare() net.Conn {
	if p := s.spare.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// dropSpare closes a kept connection that no dial took.
func (s *busStarter) dropSpare() {
	if c := s.takeSpare(); c != nil {
		c.Close()
	}
}

// ensure returns a live bus for s.dir, starting one if needed, and a
// connection to it (the one that showed it live), which the caller uses
// or closes. Concurrent callers (in any process) start exactly one: the
// start lock is taken and the bus checked again before starting.
//
// The transport dir must be trusted (trust.Dir: ours, writable by nobody
// else, in directories nobody else can write), and so must bus.json and
// the token: another local user who could write them would run a bus of
// their own and receive what our clients send.
func (s *busStarter) ensure(ctx context.Context) (BusInfo, net.Conn, error) {
	if s.noStart {
		// Only looking: a directory that is not there holds no bus, and
		// is not made.
		if _, err := os.Lstat(s.dir); errors.Is(err, fs.ErrNotExist) {
			return BusInfo{}, nil, fmt.Errorf("%w in %s", ErrNoBus, s.dir)
		}
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return BusInfo{}, nil, fmt.Errorf("transit: embedded bus: %w", err)
	}
	if err := trust.Dir("transport dir", s.dir); err != nil {
		return BusInfo{}, nil, fmt.Errorf("transit: embedded bus: %w", err)
	}
	if bi, c, err := dialLiveBus(s.dir); c != nil || err != nil {
		return bi, c, wrapUntrusted(err)
	}
	if s.noStart {
		return BusInfo{}, nil, fmt.Errorf("%w in %s", ErrNoBus, s.dir)
	}
	if os.Getenv(busChildEnv) != "" {
		// This process was started as a bus command but wants a bus: the
		// command did not run `bus` (a test binary without the re-exec
		// TestMain, say). Starting another would recurse.
		return BusInfo{}, nil, fmt.Errorf("transit: embedded bus in %s: not started: this process was itself started as the bus command (%s is set), so BusCommand does not run `multimodule bus`; set Options.BusCommand or NATSURL", s.dir, busChildEnv)
	}
	unlock, err := lockFile(ctx, filepath.Join(s.dir, busStartLock))
	if err != nil {
		return BusInfo{}, nil, fmt.Errorf("transit: embedded bus in %s: start lock: %w", s.dir, err)
	}
	defer unlock()
	if bi, c, err := dialLiveBus(s.dir); c != nil || err != nil {
		return bi, c, wrapUntrusted(err)
	}
	old, _ := ReadBusInfo(s.dir)
	cmd, exited, err := s.start()
	if err != nil {
		return BusInfo{}, nil, err
	}
	// Wait for a new bus.json naming a live, listening bus.
	delay := 10 * time.Millisecond
	for {
		if bi, c, err := dialLiveBus(s.dir); err != nil {
			return BusInfo{}, nil, wrapUntrusted(err)
		} else if c != nil && bi == old {
			c.Close()
		} else if c != nil {
			if bi.PID == cmd.Process.Pid {
				s.started.Store(int64(bi.PID))
			}
			return bi, c, nil
		}
		select {
		case <-exited:
			if bi, c, err := dialLiveBus(s.dir); err != nil {
				return BusInfo{}, nil, wrapUntrusted(err)
			} else if c != nil && bi != old {
				return bi, c, nil // another starter's bus (ours found it running)
			} else if c != nil {
				c.Close()
			}
			return BusInfo{}, nil, fmt.Errorf("transit: embedded bus in %s exited before it was ready (see %s)",
				s.dir, filepath.Join(s.dir, BusLogFile))
		case <-ctx.Done():
			// A bus that is not ready yet is nobody's: stop it rather
			// than leave it running detached.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			if errors.Is(ctx.Err(), context.Canceled) {
				return BusInfo{}, nil, fmt.Errorf("transit: embedded bus in %s: start interrupted: %w", s.dir, context.Cause(ctx))
			}
			return BusInfo{}, nil, fmt.Errorf("transit: embedded bus in %s did not become ready (see %s): %w",
				s.dir, filepath.Join(s.dir, BusLogFile), ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// wrapUntrusted gives a trust error the package's prefix (nil stays nil).
func wrapUntrusted(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("transit: embedded bus: %w", err)
}

// start runs the bus command detached (own session), output to bus.log.
// A goroutine reaps it when it exits and then closes exited.
func (s *busStarter) start() (*exec.Cmd, <-chan struct{}, error) {
	argv := s.cmd
	if len(argv) == 0 {
		exe, err := selfPath()
		if err != nil {
			return nil, nil, err
		}
		argv = []string{exe, "bus", "-T", s.dir}
	}
	logf, _, err := trust.OpenFile("bus log", filepath.Join(s.dir, BusLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("transit: embedded bus: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), busChildEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("transit: embedded bus: start %q: %w", argv, err)
	}
	// Logged from another goroutine: start runs inside busDialer.Dial,
	// under the NATS connection's lock, and a logger that publishes on
	// that connection (an external's out-of-band bridge to the daemon)
	// would wait for the lock forever.
	pid := cmd.Process.Pid
	go s.log.Info("started the embedded bus", "pid", pid, "dir", s.dir)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reap; the bus outlives nothing of ours
	return cmd, exited, nil
}

// selfPath returns the path that runs this program again: os.Executable(),
// unless the program was started through a link under another name (as
// multi-call binaries and testscript's commands are), in which case the
// path of that link (os.Args[0], looked up in PATH when it has no slash).
func selfPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("transit: find own executable: %w", err)
	}
	if len(os.Args) == 0 || filepath.Base(os.Args[0]) == filepath.Base(exe) {
		return exe, nil
	}
	if strings.ContainsRune(os.Args[0], '/') {
		return filepath.Abs(os.Args[0])
	}
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		return filepath.Abs(p)
	}
	return exe, nil
}

// lockFile takes an exclusive flock on path, waiting (bounded by ctx).
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, _, err := trust.OpenFile("lock file", path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	delay := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// busDialer is a nats.CustomDialer for the embedded bus: every (re)connect
// goes to the bus bus.json names now, starting a new one when the old one
// died, so clients survive a bus restart on a new port.
type busDialer struct {
	starter *busStarter
	timeout time.Duration
}

func (d *busDialer) Dial(network, address string) (net.Conn, error) {
	if c := d.starter.takeSpare(); c != nil {
		return c, nil // Open found the bus live with it a moment ago
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	// The connection that shows the bus live is the one the client uses.
	_, c, err := d.starter.ensure(ctx)
	return c, err
}
