package transit_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// TestHealthCountsReconnects: Health says connected, and counts the
// connection restored after the bus was killed and came back.
func TestHealthCountsReconnects(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	if h := tr.Health(); !h.Connected || h.Reconnects != 0 {
		t.Fatalf("a fresh Transit: %+v, want connected and no reconnects", h)
	}
	// The Transit starts the embedded bus again when it loses it.
	stopBus(t, dir, syscall.SIGKILL)
	waitFor(t, 30*time.Second, func() error {
		if h := tr.Health(); !h.Connected || h.Reconnects < 1 {
			return fmt.Errorf("after the bus came back: %+v, want connected and a reconnect", h)
		}
		return nil
	})
}
