package transit_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// smallFS returns a transport directory on a fresh tmpfs of size bytes,
// unmounted (after its bus stopped) when the test ends. It skips the
// test where it cannot mount (not root, no tmpfs).
func smallFS(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system needs root")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "mode=0700,size="+strconv.FormatInt(size, 10), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// The stopped bus's files close as it exits.
		waitFor(t, 30*time.Second, func() error {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				return fmt.Errorf("umount %s: %v: %s", dir, err, out)
			}
			return nil
		})
	})
	t.Cleanup(func() { stopBus(t, dir, syscall.SIGTERM) })
	return dir
}

// openErr is Open on the bus in dir with opts, returning its error.
func openErr(t *testing.T, dir string, opts transit.Options) (*transit.Transit, error) {
	t.Helper()
	opts.TransportDir = dir
	if opts.Host == "" {
		opts.Host = "testhost"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := transit.Open(ctx, opts)
	if err == nil {
		t.Cleanup(func() { tr.Close() })
	}
	return tr, err
}

// TestBusStorageSizedFromFreeSpace: on a transport file system with far
// less than 8 GiB free, the host scope's queues get half of the free
// space and the bus works; a size given explicitly is used as it is.
func TestBusStorageSizedFromFreeSpace(t *testing.T) {
	dir := smallFS(t, 512<<20)
	tr, err := openErr(t, dir, transit.Options{})
	if err != nil {
		t.Fatalf("Open on a 512 MiB file system: %v", err)
	}
	ctx := ctxT(t, 30*time.Second)
	if err := tr.Send(ctx, "Q", message.Message{"a": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := tr.Stat(ctx, "Q")
	if err != nil {
		t.Fatal(err)
	}
	if st.Capacity.Bytes < transit.MinStreamBytes || st.Capacity.Bytes > 256<<20 {
		t.Errorf("host scope storage: %d bytes, want between %d and half the free space", st.Capacity.Bytes, transit.MinStreamBytes)
	}
	other, err := openErr(t, dir, transit.Options{Host: "explicit", Capacity: transit.Capacity{Bytes: 96 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := other.Stat(ctx, "Q"); err != nil || st.Capacity.Bytes != 96<<20 {
		t.Errorf("explicit size: got %+v, %v; want 96 MiB", st.Capacity, err)
	}
}

// TestBusStorageTooSmall: when the transport file system is too small,
// or a size given cannot be reserved, Open fails with an error that says
// what is short and what to do.
func TestBusStorageTooSmall(t *testing.T) {
	dir := smallFS(t, 96<<20)
	_, err := openErr(t, dir, transit.Options{})
	if err == nil {
		t.Fatal("Open on a 96 MiB file system: no error")
	}
	for _, want := range []string{"free", dir, "-T", "--bus-max-bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want it to mention %q", err, want)
		}
	}
	_, err = openErr(t, dir, transit.Options{Capacity: transit.Capacity{Bytes: 1 << 30}})
	if err == nil {
		t.Fatal("Open with 1 GiB on a 96 MiB file system: no error")
	}
	for _, want := range []string{"cannot reserve 1024 MiB", "insufficient storage", "--bus-max-bytes", "stop the `multimodule bus` process, pid"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want it to mention %q", err, want)
		}
	}
	if errors.Is(err, transit.ErrUnknownHost) {
		t.Errorf("error %v: not about an unknown host", err)
	}
}

// TestBusMaxBytesFlag: the command line's --bus-max-bytes sizes the host
// scope a command creates; an invalid size is refused.
func TestBusMaxBytesFlag(t *testing.T) {
	dir := busDir(t)
	send := startChild(t, "main", []string{"send", "-T", dir, "--host", "flagged", "--bus-max-bytes", "80MiB", "Q", `{"a":1}`})
	if err := send.wait(t, 60*time.Second); err != nil {
		t.Fatalf("send: %v", err)
	}
	tr := open(t, dir, transit.Options{Host: "flagged"})
	st, err := tr.Stat(ctxT(t, 30*time.Second), "Q")
	if err != nil || st.Capacity.Bytes != 80<<20 || st.Msgs != 1 {
		t.Errorf("Stat: got %+v, %v; want 1 message, 80 MiB", st, err)
	}
	bad := startChild(t, "main", []string{"send", "-T", dir, "--bus-max-bytes", "lots", "Q", `{"a":1}`})
	if err := bad.wait(t, 60*time.Second); err == nil {
		t.Errorf("send --bus-max-bytes lots: no error")
	}
}

// TestDaemonTooLittleStorage: the daemon on a transport file system with
// too little free space exits at once with an error that says what to
// do (not a bare "insufficient storage resources available", error 10047).
func TestDaemonTooLittleStorage(t *testing.T) {
	dir := smallFS(t, 96<<20)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	cmd := exec.CommandContext(ctx, exe, "-s", t.TempDir(), "-T", dir, "--host", "testhost")
	cmd.Env = append(os.Environ(), roleEnv+"=main")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the daemon ran on a 96 MiB transport file system: %s", out)
	}
	for _, want := range []string{"has only", "MiB free", "-T", "--bus-max-bytes"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("daemon output %q: want it to mention %q", out, want)
		}
	}
}
