package daemon

import (
	"testing"
	"time"
)

// TestEndedBackOffIsForgotten: a crash back-off that has ended is
// dropped once the supervisor's pass acted on it, so nothing is due any
// more; one left behind was due at once for ever (nextDue 1 ms), and the
// supervisor reconciled every task every millisecond after any restart.
func TestEndedBackOffIsForgotten(t *testing.T) {
	x := newExternals(nil)
	now := time.Now()
	x.scheduleRetry("Crashed", 0)
	x.notUntil["Crashed"] = now.Add(-time.Millisecond) // its back-off ended
	x.notUntil["Waiting"] = now.Add(time.Hour)
	x.forgetBackoffs(now)
	d, ok := x.nextDue()
	if !ok || d < 59*time.Minute {
		t.Fatalf("next due: got %v (%v), want about an hour (only Waiting's back-off left)", d, ok)
	}
	if _, left := x.notUntil["Crashed"]; left {
		t.Errorf("the ended back-off of Crashed is still there")
	}
}
