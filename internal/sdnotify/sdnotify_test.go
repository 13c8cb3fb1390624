package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket as systemd does for NOTIFY_SOCKET.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// TestNotifyPathAndAbstract: one datagram per Notify, lines joined by
// newlines, to a path and to an abstract socket (@name).
func TestNotifyPathAndAbstract(t *testing.T) {
	dir, err := os.MkdirTemp("", "sdn") // short: sun_path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, name := range []string{filepath.Join(dir, "notify"), "@mm-sdnotify-test-" + strconv.Itoa(os.Getpid())} {
		c := listen(t, name)
		t.Setenv(EnvSocket, name)
		t.Setenv(EnvWatchdogUSec, "")
		n, err := FromEnv()
		if err != nil || !n.Enabled() {
			t.Fatalf("%s: FromEnv: %v, enabled %v", name, err, n.Enabled())
		}
		if err := n.Notify("READY=1", "STATUS=up"); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); got != "READY=1\nSTATUS=up\n" {
			t.Fatalf("%s: got %q", name, got)
		}
	}
}

// TestFromEnvUnsets: children must not inherit the service's socket or
// watchdog.
func TestFromEnvUnsets(t *testing.T) {
	t.Setenv(EnvSocket, "/nonexistent/notify")
	t.Setenv(EnvWatchdogUSec, "2000000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	n, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if n.Watchdog() != 2*time.Second {
		t.Fatalf("watchdog %v, want 2s", n.Watchdog())
	}
	for _, k := range []string{EnvSocket, EnvWatchdogUSec, EnvWatchdogPID} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s still set (%q)", k, v)
		}
	}
	if err := n.Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "/nonexistent/notify") {
		t.Fatalf("send to a missing socket: %v, want an error naming it", err)
	}
}

// TestWatchdogOtherPID: WATCHDOG_PID of another process: no watchdog here.
func TestWatchdogOtherPID(t *testing.T) {
	t.Setenv(EnvSocket, "@x")
	t.Setenv(EnvWatchdogUSec, "2000000")
	t.Setenv(EnvWatchdogPID, strconv.Itoa(os.Getpid()+1))
	n, err := FromEnv()
	if err != nil || n.Watchdog() != 0 {
		t.Fatalf("watchdog %v (%v), want 0", n.Watchdog(), err)
	}
}

// TestBadEnv: malformed values are errors naming the variable.
func TestBadEnv(t *testing.T) {
	t.Setenv(EnvSocket, "relative/path")
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), EnvSocket) {
		t.Fatalf("relative socket: %v", err)
	}
	t.Setenv(EnvSocket, "@x")
	t.Setenv(EnvWatchdogUSec, "soon")
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), EnvWatchdogUSec) {
		t.Fatalf("bad WATCHDOG_USEC: %v", err)
	}
	var nilN *Notifier
	if nilN.Enabled() || nilN.Notify("READY=1") != nil || nilN.Watchdog() != 0 {
		t.Fatal("a nil Notifier must do nothing")
	}
}

func TestMonotonicUSec(t *testing.T) {
	v, ok := strings.CutPrefix(MonotonicUSec(), "MONOTONIC_USEC=")
	if n, err := strconv.ParseInt(v, 10, 64); !ok || err != nil || n <= 0 {
		t.Fatalf("MonotonicUSec() = %q", MonotonicUSec())
	}
}
