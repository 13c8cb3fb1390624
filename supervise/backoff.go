package supervise

import "time"

// The retry policies of MultiModule, in one place (their figures are
// documented in docs/operations.md, "Restarts and back-off"). The
// restart policies are values: copy one for each supervised process (its
// state is the delay the next crash gets).
var (
	// ExternalRestart restarts an external task's process after it
	// exited unasked.
	ExternalRestart = Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second, ResetAfter: 10 * time.Second}
	// CoprocessRestart restarts an exec task's co-process.
	CoprocessRestart = Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second, ResetAfter: 10 * time.Second}
	// TaskLoadRetry loads again a task whose load failed (or that no
	// source has): package host keeps the count of failures in a row per
	// task, and a new config of the task retries at once.
	TaskLoadRetry = Retry{First: time.Second, Max: 30 * time.Second}
)

// Retry is the policy for trying again an operation that keeps failing,
// where no run can prove it well (a load either works or fails): the
// first failure waits First, each further one in a row twice as long as
// the one before, up to Max. It holds no state: the caller counts the
// failures.
type Retry struct {
	First time.Duration // the delay after the first failure
	Max   time.Duration // the largest delay; below First counts as First
}

// After returns how long to wait after the failures-th failure in a row
// (1 for the first; less counts as 1).
func (r Retry) After(failures int) time.Duration {
	d, hi := r.First, max(r.Max, r.First)
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// Backoff is the crash-loop policy for restarting a process that keeps
// exiting. A crash after a healthy run (one of at least ResetAfter), and
// the first crash of all, restart at once: the process was well, and one
// crash says little. A crash soon after a restart waits Min, each further
// one twice as long as the one before, up to Max. A Backoff is used by
// one goroutine (one per supervised process); it is not safe for
// concurrent use. A zero Backoff always restarts at once.
type Backoff struct {
	Min        time.Duration // the delay after the second crash in a row
	Max        time.Duration // the largest delay; below Min counts as Min
	ResetAfter time.Duration // a run at least this long is healthy: the next crash restarts at once

	next   time.Duration // the delay the next crash in a row gets
	looped bool          // a crash happened since the last healthy run
}

// Next returns how long to wait before restarting a process that has just
// exited after running for ranFor (Process.RanFor).
func (b *Backoff) Next(ranFor time.Duration) time.Duration {
	lo, hi := b.Min, max(b.Max, b.Min)
	if !b.looped || ranFor >= b.ResetAfter {
		b.looped, b.next = true, lo
		return 0
	}
	d := min(b.next, hi)
	if d > hi/2 {
		b.next = hi
	} else {
		b.next = 2 * d
	}
	return d
}

// Reset forgets past crashes: the next one restarts at once.
func (b *Backoff) Reset() { b.looped, b.next = false, 0 }
