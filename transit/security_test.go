package transit_test

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// TestBusListensOnLoopbackOnly: the embedded bus's URL is 127.0.0.1, and
// its port cannot be reached through any other address of this machine.
func TestBusListensOnLoopbackOnly(t *testing.T) {
	dir := busDir(t)
	open(t, dir, transit.Options{})
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(bi.URL)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Fatalf("bus URL %s: got host %q, want a loopback address", bi.URL, u.Hostname())
	}
	// The port must be closed on the other addresses.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		tried++
		addr := net.JoinHostPort(ipn.IP.String(), u.Port())
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			t.Errorf("connected to the bus through %s: got a connection, want refused", addr)
		}
	}
	if tried == 0 {
		t.Logf("no non-loopback address on this machine: only the URL was checked")
	}
}

// TestBusFilesPrivate: the transport directory is 0700 and the token and
// bus.json are 0600, whatever the umask.
func TestBusFilesPrivate(t *testing.T) {
	dir := busDir(t)
	open(t, dir, transit.Options{})
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700},
		{filepath.Join(dir, transit.BusTokenFile), 0o600},
		{filepath.Join(dir, transit.BusInfoFile), 0o600},
	} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tc.want {
			t.Errorf("%s: got mode %v, want %v", tc.path, got, tc.want)
		}
	}
}

// TestForeignBytesDeadLettered: bytes on a queue's subject that are not a
// JSON object (published by some other NATS client holding the token)
// never reach the owner as a message: they go to the dead-letter queue
// with the reason, and the messages around them are delivered in order.
func TestForeignBytesDeadLettered(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	if err := tr.Send(ctx, "rawq", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	js := rawJS(t, dir)
	bad := []string{"not json", "[1, 2]", `"a string"`, `{"unterminated": `, "\xff\xfe"}
	for _, b := range bad {
		if _, err := js.Publish(ctx, "mm.testhost.q.rawq", []byte(b)); err != nil {
			t.Fatalf("publish %q: %v", b, err)
		}
	}
	if err := tr.Send(ctx, "rawq", message.Message{"n": 2}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	cons, err := tr.Consume(ctx, "rawq")
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop()
	for want := int64(1); want <= 2; want++ {
		select {
		case d := <-cons.C():
			if n, _ := message.Int(d.Msg["n"]); n != want {
				t.Fatalf("got %v, want n=%d (the foreign bytes skipped)", d.Msg, want)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("no message n=%d", want)
		}
	}
	for i := range bad {
		m, err := tr.Receive(ctx, transit.DeadLetterQueue)
		if err != nil {
			t.Fatalf("dead letter %d: %v", i, err)
		}
		meta, _ := m[".ipc_transit_meta"].(map[string]any)
		dl, _ := meta["dead_letter"].(map[string]any)
		if reason, _ := dl["reason"].(string); reason == "" || dl["queue"] != "rawq" {
			t.Fatalf("dead letter %d: got %v, want a reason and queue rawq", i, m)
		}
	}
}
