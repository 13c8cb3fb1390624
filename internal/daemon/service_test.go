package daemon_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// notifyStub is a service manager's NOTIFY_SOCKET: a unixgram socket the
// test listens on; every datagram the daemon sends arrives on msgs.
type notifyStub struct {
	path string
	msgs chan string
	seen []string
}

func newNotifyStub(t *testing.T) *notifyStub {
	t.Helper()
	dir, err := os.MkdirTemp("", "mmsd") // short: sun_path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &notifyStub{path: filepath.Join(dir, "notify"), msgs: make(chan string, 1024)}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// expect waits for a notification with a line equal to (or, for a line
// ending in "=", starting with) want, and returns that notification.
func (s *notifyStub) expect(t *testing.T, d *mmtest.Proc, want string) string {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-s.msgs:
			s.seen = append(s.seen, m)
			for _, l := range strings.Split(strings.TrimRight(m, "\n"), "\n") {
				if l == want || strings.HasSuffix(want, "=") && strings.HasPrefix(l, want) {
					return m
				}
			}
		case <-deadline:
			t.Fatalf("no %s notification within %v; got %q; stderr:\n%s", want, wait, s.seen, tail(d.Stderr.String(), 3000))
		}
	}
}

// TestServiceNotify runs the daemon as systemd runs a Type=notify service
// with WatchdogSec= and ExecReload=kill -HUP: READY=1 once it serves,
// WATCHDOG=1 pings, RELOADING=1 … READY=1 around a SIGHUP that re-reads
// the config file (and keeps the running config when the file is
// broken), STOPPING=1 on SIGTERM, and children that inherit neither the
// socket nor the watchdog.
func TestServiceNotify(t *testing.T) {
	env := mmtest.NewEnv(t)
	stub := newNotifyStub(t)
	// The config file is a link to a file in another directory (as a
	// deployment tool that swaps releases makes it): its change is not
	// seen by the watch on the link's directory, only a reload reads it.
	real := filepath.Join(t.TempDir(), "release.yaml")
	link := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, real, "Example1:\n  outstr: one\n")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", stub.path)
	t.Setenv("WATCHDOG_USEC", "400000") // ping every 200 ms
	d := env.Start("-p", "MultiModuleTest", "-c", link)

	stub.expect(t, d, "READY=1")
	// Ready means serving: the status is written, the config file applied.
	st, err := env.Store().LoadStatus("main")
	if err != nil || st == nil || st.PID != d.PID() {
		t.Fatalf("READY=1 before main.status names the daemon: %+v (%v)", st, err)
	}
	wantOutstr(t, env, "one")

	for range 2 {
		stub.expect(t, d, "WATCHDOG=1")
	}

	// The bus the daemon started must not notify systemd nor think a
	// watchdog waits for it.
	bi, err := transit.ReadBusInfo(filepath.Join(env.StateDir, "transit"))
	if err != nil {
		t.Fatal(err)
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(bi.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC="} {
		if bytes.Contains(environ, []byte(k)) {
			t.Errorf("the bus (pid %d) inherited %s", bi.PID, k)
		}
	}

	// systemctl reload: the new file is applied between RELOADING=1 and READY=1.
	writeFile(t, real, "Example1:\n  outstr: two\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if m := stub.expect(t, d, "RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	stub.expect(t, d, "READY=1")
	wantOutstr(t, env, "two")

	// A broken file: reported, the running config stays, the daemon serves on.
	writeFile(t, real, "Example1:\n  outstr: [three\n")
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	stub.expect(t, d, "RELOADING=1")
	if m := stub.expect(t, d, "READY=1"); !strings.Contains(m, "STATUS=serving; config file not applied") {
		t.Errorf("READY=1 after a broken file: status does not say it was not applied: %q", m)
	}
	wantOutstr(t, env, "two")
	mmtest.Eventually(t, wait, func() error {
		if !strings.Contains(d.Stderr.String(), "config file not applied, keeping the running config") || !strings.Contains(d.Stderr.String(), link) {
			return fmt.Errorf("no error naming the file on stderr:\n%s", tail(d.Stderr.String(), 2000))
		}
		return nil
	})
	if d.Exited() {
		t.Fatalf("the daemon exited after a reload; stderr:\n%s", tail(d.Stderr.String(), 3000))
	}

	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stub.expect(t, d, "STOPPING=1")
	// A SIGHUP during the orderly exit neither reloads nor kills it.
	_ = d.Signal(syscall.SIGHUP) // an error: it has already exited
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, tail(d.Stderr.String(), 3000))
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantOutstr checks Example1's saved config.
func wantOutstr(t *testing.T, env *mmtest.Env, want string) {
	t.Helper()
	cfg, err := env.Store().LoadConfig("Example1")
	if err != nil || cfg == nil || cfg["outstr"] != want {
		t.Fatalf("Example1's saved config %v (%v), want outstr %q", cfg, err, want)
	}
}
