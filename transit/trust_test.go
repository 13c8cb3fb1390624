package transit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/transit"
	"github.com/multimodule/multimodule/trust"
	"github.com/multimodule/multimodule/trust/trusttest"
)

// fakeBus is another user's stand-in for a bus: a listener that counts
// the connections it gets.
func fakeBus(t *testing.T) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), conns
}

// openRefused opens a Transit as a client command does and returns the error
// (closing the Transit if it opened).
func openRefused(t *testing.T, opts transit.Options) error {
	t.Helper()
	opts.Host = "testhost"
	opts.Logger = slog.New(slog.NewTextHandler(&testWriter{t: t, prefix: "transit: "}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := transit.Open(ctx, opts)
	if err == nil {
		tr.Close()
		return errors.New("opened")
	}
	return err
}

// TestBusHijackRefused: another local user, given a state dir others can
// write, moves its transit/ aside and puts in its place a bus.json naming
// their own listener (and a live process of theirs) and a token. A client
// refuses the transport dir with the reason and the fix, and never
// connects to their listener, so nothing it sends reaches them.
func TestBusHijackRefused(t *testing.T) {
	trusttest.Nobody(t)
	st := filepath.Join(trusttest.TempDir(t), "st2")
	if err := os.MkdirAll(filepath.Join(st, "transit"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(st, 0o777); err != nil {
		t.Fatal(err)
	}
	addr, conns := fakeBus(t)
	theirs := trusttest.Command(t, "sleep", "100")
	if err := theirs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { theirs.Process.Kill(); theirs.Wait() })
	stime, err := transit.ProcessStartTime(theirs.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	trusttest.Sh(t, `cd "$0" && mv transit transit.old && mkdir transit && cd transit &&
		printf '{"url":"nats://%s","pid":%s,"start_time":%s}\n' "$1" "$2" "$3" > bus.json && echo stolen > token`,
		st, addr, fmt.Sprint(theirs.Process.Pid), fmt.Sprint(stime))

	err = openRefused(t, transit.Options{StateDir: st})
	want := "transport dir " + filepath.Join(st, "transit") + " is owned by nobody"
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), want) {
		t.Errorf("Open: got %v, want a refusal saying %q", err, want)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the other user's listener got %d connection(s), want none", n)
	}
}

// TestBusFilesTrusted: bus.json and the token are believed only when they
// are ours, private and not links; the transport dir only when nobody
// else can write it. Each refusal names the file and the fix, and no
// connection is made.
func TestBusFilesTrusted(t *testing.T) {
	addr, conns := fakeBus(t)
	stime, err := transit.ProcessStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	busJSON := fmt.Sprintf(`{"url":"nats://%s","pid":%d,"start_time":%d}`+"\n", addr, os.Getpid(), stime)
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "transit")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string]string{transit.BusInfoFile: busJSON, transit.BusTokenFile: "tok\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tt := range []struct {
		name   string
		attack func(t *testing.T, dir string)
		want   string
	}{
		{"dir writable by others", func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "transport dir %[1]s is writable by others (mode 0777): run chmod 700 %[1]s"},
		{"bus.json group-writable", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, transit.BusInfoFile), 0o620); err != nil {
				t.Fatal(err)
			}
		}, "bus file %[1]s/bus.json is writable by its group (mode 0620): run chmod 600 %[1]s/bus.json"},
		{"bus.json of another user", func(t *testing.T, dir string) {
			trusttest.Chown(t, filepath.Join(dir, transit.BusInfoFile))
		}, "bus file %[1]s/bus.json is owned by nobody"},
		{"token a link", func(t *testing.T, dir string) {
			tok := filepath.Join(dir, transit.BusTokenFile)
			other := filepath.Join(t.TempDir(), "token")
			if err := os.Rename(tok, other); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, tok); err != nil {
				t.Fatal(err)
			}
		}, "bus token %[1]s/token is a symbolic link: refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := setup(t)
			tt.attack(t, dir)
			err := openRefused(t, transit.Options{TransportDir: dir})
			want := fmt.Sprintf(tt.want, dir)
			if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), want) {
				t.Errorf("Open: got %v, want a refusal saying %q", err, want)
			}
			if n := conns.Load(); n != 0 {
				t.Errorf("the listener got %d connection(s), want none", n)
			}
		})
	}
}

// TestRunBusRefusesLooseDir: `multimodule bus -T dir` refuses a
// directory others can write instead of making it private (what they put
// in it would stay).
func TestRunBusRefusesLooseDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := transit.RunBus(ctx, dir, transit.BusOptions{Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is writable by others (mode 0777)") {
		t.Errorf("RunBus: got %v, want a refusal", err)
	}
}
