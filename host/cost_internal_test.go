package host

import (
	"testing"
	"time"
)

// TestInlineCostIgnoresHiccups: one message that took long (a preempted
// thread, a stop-the-world pause) does not lift a fast task's cost to the
// inline bound, while a task that is slow every time gets above it.
func TestInlineCostIgnoresHiccups(t *testing.T) {
	cost := 500 * time.Nanosecond
	for range 20 {
		cost = nextCost(cost, 500*time.Nanosecond)
	}
	cost = nextCost(cost, 5*time.Millisecond) // one stall
	if cost >= inlineCostMax {
		t.Fatalf("after one 5 ms message the cost is %v: at the inline bound %v", cost, inlineCostMax)
	}
	for range 40 {
		cost = nextCost(cost, 3*inlineCostMax/2) // slow every time
	}
	if cost < inlineCostMax {
		t.Fatalf("after 40 messages of %v each the cost is %v: below the inline bound %v", 3*inlineCostMax/2, cost, inlineCostMax)
	}
}
