package daemon

import (
	"testing"
	"time"
)

// TestMonitorFailsafesJoined: the daemon's exit waits for a failsafe the
// monitor decided that is under way, and carries out none decided after
// the monitor's actor stopped.
func TestMonitorFailsafesJoined(t *testing.T) {
	m := &mainRole{}
	var g group
	g.add(func() error { return nil }, func(error) {}) // the exit begins at once
	m.addMonitorFailsafes(&g)
	release, started := make(chan struct{}), make(chan struct{})
	if !m.monitorFailsafes.start(func() { close(started); <-release }) {
		t.Fatal("a failsafe refused before the exit")
	}
	<-started
	done := make(chan error, 1)
	go func() { done <- g.run() }()
	// The group cannot end while the failsafe runs; once it is let go,
	// it ends.
	select {
	case <-done:
		t.Fatal("the group ended while a failsafe was under way")
	default:
	}
	close(release)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the group did not end once the failsafe had")
	}
	ran := false
	if m.monitorFailsafes.start(func() { ran = true }) || ran {
		t.Fatal("a failsafe was carried out after the monitor's actor stopped")
	}
}
