// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): state lines such as READY=1, RELOADING=1, STOPPING=1 and
// WATCHDOG=1, each notification one datagram on the unix socket that
// NOTIFY_SOCKET names. It has no dependency beyond the standard library and
// does nothing when the process does not run under a service manager.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables systemd sets for a service.
const (
	EnvSocket        = "NOTIFY_SOCKET" // where notifications go
	EnvWatchdogUSec  = "WATCHDOG_USEC" // the watchdog period (WatchdogSec=), microseconds
	EnvWatchdogPID   = "WATCHDOG_PID"  // the process the watchdog is for, when set
	EnvJournalStream = "JOURNAL_STREAM"
)

// Notifier sends notifications to the service manager. The zero value and
// a nil *Notifier send nothing.
type Notifier struct {
	addr     *net.UnixAddr // nil: no service manager listens
	watchdog time.Duration // 0: no watchdog
}

// FromEnv returns the Notifier the environment describes and removes
// NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the environment, so
// that child processes (which are not the service's main process) neither
// notify nor believe a watchdog waits for them. A malformed variable is an
// error; the Notifier returned then still does what the rest allows.
func FromEnv() (*Notifier, error) {
	sock := os.Getenv(EnvSocket)
	usec := os.Getenv(EnvWatchdogUSec)
	wpid := os.Getenv(EnvWatchdogPID)
	for _, k := range []string{EnvSocket, EnvWatchdogUSec, EnvWatchdogPID} {
		_ = os.Unsetenv(k)
	}
	n := &Notifier{}
	var errs []error
	if sock != "" {
		addr, err := socketAddr(sock)
		if err != nil {
			errs = append(errs, err)
		} else {
			n.addr = addr
		}
	}
	if usec != "" && n.addr != nil {
		d, err := watchdogPeriod(usec, wpid, os.Getpid())
		if err != nil {
			errs = append(errs, err)
		} else {
			n.watchdog = d
		}
	}
	return n, errors.Join(errs...)
}

// socketAddr parses NOTIFY_SOCKET: a path, or "@name" for the abstract
// namespace (Go's net package maps a leading '@' to the abstract namespace).
func socketAddr(s string) (*net.UnixAddr, error) {
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "@") {
		return nil, fmt.Errorf("sdnotify: %s=%q: want an absolute path or @abstract name", EnvSocket, s)
	}
	return &net.UnixAddr{Name: s, Net: "unixgram"}, nil
}

// watchdogPeriod parses WATCHDOG_USEC; when WATCHDOG_PID names another
// process, the watchdog is not ours (0, no error).
func watchdogPeriod(usec, wpid string, self int) (time.Duration, error) {
	if wpid != "" {
		pid, err := strconv.Atoi(wpid)
		if err != nil {
			return 0, fmt.Errorf("sdnotify: %s=%q: %w", EnvWatchdogPID, wpid, err)
		}
		if pid != self {
			return 0, nil
		}
	}
	u, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || u == 0 {
		return 0, fmt.Errorf("sdnotify: %s=%q: want a positive number of microseconds", EnvWatchdogUSec, usec)
	}
	return time.Duration(u) * time.Microsecond, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Watchdog is the watchdog period the service manager expects pings
// within (WATCHDOG=1), 0 when there is no watchdog. Ping at half of it.
func (n *Notifier) Watchdog() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Notify sends the state lines (e.g. "READY=1", "STATUS=loading") as one
// notification. Without a service manager it does nothing.
func (n *Notifier) Notify(lines ...string) error {
	if !n.Enabled() || len(lines) == 0 {
		return nil
	}
	for _, l := range lines {
		if strings.ContainsRune(l, '\n') {
			return fmt.Errorf("sdnotify: state %q contains a newline", l)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %s %s: %w", EnvSocket, n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("sdnotify: send to %s: %w", n.addr.Name, err)
	}
	return nil
}

// MonotonicUSec is the MONOTONIC_USEC=… line that systemd wants with
// RELOADING=1: CLOCK_MONOTONIC now, in microseconds.
func MonotonicUSec() string {
	return "MONOTONIC_USEC=" + strconv.FormatInt(monotonicNow().Microseconds(), 10)
}

// monotonicNow reads CLOCK_MONOTONIC (the clock systemd compares
// MONOTONIC_USEC with; Go's monotonic readings are not exposed).
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
