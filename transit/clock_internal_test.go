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
	// A base older than refreshEvery, even one an hour off the wall clock
	// (as after a step of the system clock): the next read is fresh.
	now := MonoNow()
	for _, base := range []clockBase{
		{mono: now - 2*refreshEvery, unix: time.Now().Add(-2 * refreshEvery).UnixNano()},
		{mono: now - 2*refreshEvery, unix: time.Now().Add(time.Hour).UnixNano()},
		{mono: now + 2*refreshEvery, unix: time.Now().Add(-time.Hour).UnixNano()},
	} {
		c.base.Store(&base)
		got, want := time.Unix(0, c.unixNano()), time.Now()
		if d := want.UnixNano() - got.UnixNano(); d < -int64(slack) || d > int64(10*time.Millisecond) {
			t.Errorf("base %+v: got %v, want about %v", base, got, want)
		}
		if *c.base.Load() == base {
			t.Errorf("base %+v: not replaced", base)
		}
	}
	// A reading taken just before a base another goroutine stored still
	// tells the wall time of the reading.
	mono := MonoNow()
	wall := time.Now()
	c.base.Store(&clockBase{mono: MonoNow(), unix: time.Now().UnixNano()})
	if d := c.unixNanoAt(mono) - wall.UnixNano(); d < -int64(slack) || d > int64(slack) {
		t.Errorf("a reading older than the base: %v off", time.Duration(d))
	}
}
