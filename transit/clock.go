package transit

import (
	"sync/atomic"
	"time"
)

// sendClock reads the wall clock for send_ts at half the price of
// time.Now, which reads two clocks (wall and monotonic; ≈ 65 ns on a
// virtual machine): it reads only the monotonic clock and adds the time
// elapsed to a wall time read at most a second earlier. A step of the
// system clock therefore shows in send_ts within a second.
type sendClock struct{ base atomic.Pointer[clockBase] }

// clockBase is a wall time read with time.Now (and its monotonic
// reading), and the same as unix nanoseconds.
type clockBase struct {
	t    time.Time
	unix int64
}

// refreshEvery bounds how old the wall time read by sendClock may be.
const refreshEvery = time.Second

// unixNano returns the wall time in nanoseconds since the Unix epoch.
func (c *sendClock) unixNano() int64 {
	if b := c.base.Load(); b != nil {
		if d := time.Since(b.t); d >= 0 && d < refreshEvery {
			return b.unix + int64(d)
		}
	}
	t := time.Now()
	c.base.Store(&clockBase{t: t, unix: t.UnixNano()})
	return t.UnixNano()
}

// sendTS is send_ts for a time in unix nanoseconds, as
// message.Message.SetSendTS writes it: unix seconds as a float.
func sendTS(unixNano int64) float64 { return float64(unixNano) / 1e9 }
