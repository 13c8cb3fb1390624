package transit

import (
	"sync/atomic"
	"time"
)

// monoOrigin is the origin of MonoNow.
var monoOrigin = time.Now()

// MonoNow reads the monotonic clock: the time elapsed since a fixed
// origin in this process. It is one clock read, where time.Now reads the
// wall clock as well (each read is ≈ 30 ns on the standard machine). The
// host times task handlers with it, and gives a reading of it to
// [InProcess.Prepare] as the send time, so that a message handled inline
// is stamped and timed with one read.
func MonoNow() time.Duration { return time.Since(monoOrigin) }

// sendClock reads the wall clock for send_ts at half the price of
// time.Now, which reads two clocks (wall and monotonic; ≈ 65 ns on a
// virtual machine): it reads only the monotonic clock (MonoNow) and adds
// the time elapsed to a wall time read at most a second earlier. A step
// of the system clock therefore shows in send_ts within a second.
type sendClock struct{ base atomic.Pointer[clockBase] }

// clockBase is a wall time read with time.Now, as unix nanoseconds, and
// the MonoNow reading of the same moment.
type clockBase struct {
	mono time.Duration
	unix int64
}

// refreshEvery bounds how old the wall time read by sendClock may be.
const refreshEvery = time.Second

// unixNano returns the wall time in nanoseconds since the Unix epoch.
func (c *sendClock) unixNano() int64 { return c.unixNanoAt(MonoNow()) }

// unixNanoAt returns the wall time, in nanoseconds since the Unix epoch,
// of mono, a MonoNow reading taken a moment ago.
func (c *sendClock) unixNanoAt(mono time.Duration) int64 {
	if b := c.base.Load(); b != nil {
		// A reading a little older than the base (another goroutine
		// refreshed it since mono was read) is fine too.
		if d := mono - b.mono; d > -refreshEvery && d < refreshEvery {
			return b.unix + int64(d)
		}
	}
	t := time.Now()
	b := &clockBase{mono: t.Sub(monoOrigin), unix: t.UnixNano()}
	c.base.Store(b)
	return b.unix + int64(mono-b.mono)
}

// sendTS is send_ts for a time in unix nanoseconds, as
// message.Message.SetSendTS writes it: unix seconds as a float.
func sendTS(unixNano int64) float64 { return float64(unixNano) / 1e9 }
