package transit_test

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// A sync send whose request went to a bus that then died is sent again as
// soon as the connection is restored (to the new bus the reconnect
// started), not only when its attempt times out: here an attempt would
// wait longer than the test waits for the send.
func TestSyncSendRetriedAtReconnect(t *testing.T) {
	restore := transit.SetPublishAttempt(5 * time.Minute)
	defer restore()
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 4*time.Minute)
	if err := tr.Send(ctx, "resend", message.Message{"n": 0}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(bi.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The bus stops reading: the next request waits in its socket.
	t.Cleanup(func() { _ = syscall.Kill(bi.PID, syscall.SIGCONT) }) // a stopped bus ignores SIGTERM
	stopProcess(t, bi.PID)
	errc := make(chan error, 1)
	go func() { errc <- tr.Send(ctx, "resend", message.Message{"n": 1}, transit.SendOptions{}) }()
	waitFor(t, 30*time.Second, func() error {
		if n := unreadBytes(t, u.Port()); n == 0 {
			return fmt.Errorf("the send has not reached the bus' socket yet")
		}
		return nil
	})
	// It dies with the request unread.
	stopBus(t, dir, syscall.SIGKILL)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Send after the bus died: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Send not done 90 s after the bus died: it waits for its attempt to time out")
	}
	for i := range 2 {
		m, err := tr.Receive(ctx, "resend")
		if err != nil {
			t.Fatalf("Receive %d: %v", i, err)
		}
		if n, _ := message.Int(m["n"]); n != int64(i) {
			t.Fatalf("Receive: got n=%d, want %d", n, i)
		}
	}
	if m, err := tr.TryReceive(ctx, "resend"); err == nil {
		t.Errorf("extra message: %v", m)
	}
}

// unreadBytes returns the bytes waiting in the receive queues of the
// established TCP connections to local port (hex in /proc/net/tcp).
func unreadBytes(t *testing.T, port string) int64 {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", p)
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// sl local_address rem_address st tx_queue:rx_queue ...
		if len(fs) < 5 || !strings.HasSuffix(fs[1], want) || fs[3] != "01" {
			continue
		}
		_, rx, _ := strings.Cut(fs[4], ":")
		v, _ := strconv.ParseInt(rx, 16, 64)
		n += v
	}
	return n
}
