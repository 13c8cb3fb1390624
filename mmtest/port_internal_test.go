package mmtest

import "testing"

// TestFreePortBelowEphemeralRange: the ports a cluster's nodes listen on
// are outside the kernel's ephemeral range, where any process' outgoing
// connection could take one before a node binds it (a node then failed
// to start with "address already in use" under a busy test run).
func TestFreePortBelowEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 50 {
		if p := freePort(t); p >= low || p < 10000 {
			t.Fatalf("freePort gave %d, want 10000 <= port < %d (the ephemeral range starts there)", p, low)
		}
	}
}
