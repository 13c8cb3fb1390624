package transit_test

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

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
