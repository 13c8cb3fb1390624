package transit

import (
	"testing"
	"time"
)

// TestSendClock checks that send_ts's clock tells the wall time, and
// catches up with a stepped system clock within refreshEvery.
func TestSendClock(t *testing.T) {
	var c sendClock
	const slack = time.Millisecond // CLOCK_REALTIME may be slewed against CLOCK_MONOTONIC
	for i := range 1000 {
		before := time.Now()
		got := time.Unix(0, c.unixNano())
		after := time.Now()
		if got.UnixNano() < before.UnixNano()-int64(slack) || got.UnixNano() > after.UnixNano()+int64(slack) {
			t.Fatalf("read %d: got %v, want between %v and %v", i, got, before, after)
		}
	}
	// A base older than refreshEvery, or one an hour off the wall clock
	// (as after a step of the system clock): the next read is fresh.
	for _, base := range []time.Time{
		time.Now().Add(-2 * refreshEvery),
		time.Now().Round(0).Add(time.Hour), // wall clock only
		time.Now().Round(0).Add(-time.Hour),
	} {
		c.base.Store(&clockBase{t: base, unix: base.UnixNano()})
		got, want := time.Unix(0, c.unixNano()), time.Now()
		if d := want.UnixNano() - got.UnixNano(); d < -int64(slack) || d > int64(10*time.Millisecond) {
			t.Errorf("base %v: got %v, want about %v", base, got, want)
		}
		if c.base.Load().t == base {
			t.Errorf("base %v: not replaced", base)
		}
	}
}
