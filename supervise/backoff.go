package supervise

import "time"

// The Backoff defaults, used for zero fields.
const (
	DefaultBackoffMin        = 50 * time.Millisecond
	DefaultBackoffMax        = 10 * time.Second
	DefaultBackoffResetAfter = 10 * time.Second
)

// Backoff is the crash-loop policy for restarting a process that keeps
// exiting: the first restart waits Min, each following one twice as long
// as the one before, up to Max; a run of at least ResetAfter counts as
// healthy and starts again from Min. Zero fields take the Default values
// (50 ms doubling up to 10 s, reset after 10 s). A Backoff is used by one
// goroutine (one per supervised task); it is not safe for concurrent use.
type Backoff struct {
	Min        time.Duration // the first delay
	Max        time.Duration // the largest delay; below Min counts as Min
	ResetAfter time.Duration // a run at least this long resets the delay to Min

	next time.Duration // the delay the next crash gets; 0 before the first
}

// Next returns how long to wait before restarting a process that has just
// exited after running for ranFor (Process.RanFor).
func (b *Backoff) Next(ranFor time.Duration) time.Duration {
	lo, hi, reset := b.limits()
	if b.next == 0 || ranFor >= reset {
		b.next = lo
	}
	d := min(b.next, hi)
	if d > hi/2 {
		b.next = hi
	} else {
		b.next = 2 * d
	}
	return d
}

// Reset forgets past crashes: the next delay is Min again.
func (b *Backoff) Reset() { b.next = 0 }

// limits returns Min, Max and ResetAfter with defaults filled in.
func (b *Backoff) limits() (lo, hi, reset time.Duration) {
	lo, hi, reset = b.Min, b.Max, b.ResetAfter
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	if hi < lo {
		hi = lo
	}
	if reset <= 0 {
		reset = DefaultBackoffResetAfter
	}
	return lo, hi, reset
}
