package daemon

import (
	"slices"
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

// TestExternalEnvTurnsOffMaxProcsUpdate: an external process runs with
// the Go runtime's once-a-second GOMAXPROCS update off, unless GODEBUG
// already decides it; the rest of GODEBUG and of the environment is kept.
func TestExternalEnvTurnsOffMaxProcsUpdate(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"HOME=/h"}, "GODEBUG=updatemaxprocs=0"},
		{[]string{"GODEBUG=gctrace=1", "HOME=/h"}, "GODEBUG=gctrace=1,updatemaxprocs=0"},
		{[]string{"GODEBUG=updatemaxprocs=1", "HOME=/h"}, "GODEBUG=updatemaxprocs=1"},
	}
	for _, tc := range tests {
		got := externalEnv(tc.in)
		if !slices.Contains(got, tc.want) || !slices.Contains(got, "HOME=/h") || len(got) != 2 {
			t.Errorf("externalEnv(%q) = %q, want HOME=/h and %s", tc.in, got, tc.want)
		}
	}
}
