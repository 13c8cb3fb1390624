package monitor

import (
	"fmt"
	"sort"
	"time"
)

// Kind says how a bucket's points are turned into one value over a window.
type Kind int

// The bucket kinds.
const (
	// Gauge: the mean of the points inside the window (0 if none).
	Gauge Kind = iota
	// Sum: the sum of the points inside the window divided by the window's
	// width in seconds, a rate per second. Used for events recorded as 1.
	Sum
	// Counter: the points are readings of an ever-growing total; the value
	// is (last − first) / (last time − first time) over the points inside
	// the window, a rate per second. 0 with fewer than two points, equal
	// times, or a decrease (the counter was reset).
	Counter
)

// String returns the kind's name as the config spells it:
// "gauge", "sum" or "counter".
func (k Kind) String() string {
	switch k {
	case Gauge:
		return "gauge"
	case Sum:
		return "sum"
	case Counter:
		return "counter"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind returns the Kind named s ("gauge", "sum" or "counter").
func ParseKind(s string) (Kind, error) {
	switch s {
	case "gauge":
		return Gauge, nil
	case "sum":
		return Sum, nil
	case "counter":
		return Counter, nil
	}
	return 0, fmt.Errorf("monitor: unknown bucket kind %q (want gauge, sum or counter)", s)
}

// The bucket defaults for samples (docs/monitoring.md).
const (
	DefaultCutoffAge     = 300 * time.Second // points older than this are dropped
	DefaultMinPoints     = 3                 // fewer points than this: no value
	DefaultMinBucketSpan = 0.5               // (now − oldest point) / window below this: no value
)

// BucketOptions shape a Bucket. A zero field takes the default
// (DefaultCutoffAge, DefaultMinPoints, DefaultMinBucketSpan); a negative
// MinPoints or MinBucketSpan turns that check off.
type BucketOptions struct {
	Kind          Kind          // how points become a value
	CutoffAge     time.Duration // points older than this (relative to the newest time seen) are dropped
	MinPoints     int           // Eval gives no value while the bucket holds fewer points
	MinBucketSpan float64       // Eval gives no value while (now − oldest point) / window is below this
}

// withDefaults fills the zero fields.
func (o BucketOptions) withDefaults() BucketOptions {
	if o.CutoffAge <= 0 {
		o.CutoffAge = DefaultCutoffAge
	}
	if o.MinPoints == 0 {
		o.MinPoints = DefaultMinPoints
	}
	if o.MinBucketSpan == 0 {
		o.MinBucketSpan = DefaultMinBucketSpan
	}
	return o
}

// point is one sample; t is in unix nanoseconds (16 bytes a point, and
// cheap comparisons).
type point struct {
	t int64
	v float64
}

// Bucket holds the recent points (time, value) of one metric of one task
// or queue, oldest first. Points older than the cutoff age are dropped as
// newer ones arrive (and by Prune). A Bucket is not safe for concurrent
// use; Monitor guards its buckets with its own lock.
type Bucket struct {
	opts  BucketOptions
	pts   []point // pts[start:] are the live points, sorted by time
	start int
}

// NewBucket returns an empty bucket.
func NewBucket(opts BucketOptions) *Bucket {
	return &Bucket{opts: opts.withDefaults()}
}

// Kind returns the bucket's kind.
func (b *Bucket) Kind() Kind { return b.opts.Kind }

// Len returns how many points the bucket holds.
func (b *Bucket) Len() int { return len(b.pts) - b.start }

// Add records the value v at time t and drops the points older than the
// cutoff age relative to t (or to the newest point, if t is older than
// it). Points normally arrive in time order; a late point is put in its
// place.
func (b *Bucket) Add(t time.Time, v float64) {
	tn := t.UnixNano()
	live := b.pts[b.start:]
	if n := len(live); n == 0 || tn >= live[n-1].t {
		b.pts = append(b.pts, point{tn, v})
	} else {
		i := b.start + sort.Search(n, func(i int) bool { return tn < live[i].t })
		b.pts = append(b.pts, point{})
		copy(b.pts[i+1:], b.pts[i:])
		b.pts[i] = point{tn, v}
	}
	b.prune(b.pts[len(b.pts)-1].t)
}

// Prune drops the points older than the cutoff age at time now (points
// exactly cutoff age old stay) and reports whether the bucket is now
// empty. Monitor removes empty buckets.
func (b *Bucket) Prune(now time.Time) (empty bool) { return b.prune(now.UnixNano()) }

func (b *Bucket) prune(now int64) (empty bool) {
	limit := now - int64(b.opts.CutoffAge)
	live := b.pts[b.start:]
	drop := sort.Search(len(live), func(i int) bool { return live[i].t >= limit })
	b.start += drop
	switch {
	case b.start == len(b.pts):
		b.pts, b.start = b.pts[:0], 0
	case b.start > 64 && b.start > len(b.pts)/2:
		// Slide the live points down so the array does not grow forever.
		n := copy(b.pts, b.pts[b.start:])
		b.pts, b.start = b.pts[:n], 0
	}
	return b.Len() == 0
}

// Eval returns the bucket's value over the window of the given width
// ending at now, per the bucket's kind (see Kind); "inside the window"
// means strictly newer than now − window. ok is false, and there is no
// value, while the bucket holds fewer than MinPoints points, while
// (now − oldest point's time) / window is below MinBucketSpan, or when
// window is not positive. Eval does not drop old points; Prune does.
func (b *Bucket) Eval(now time.Time, window time.Duration) (value float64, ok bool) {
	return b.eval(now, window, false)
}

// eval is Eval; anyway ignores MinPoints and MinBucketSpan (the last
// evaluation of a bucket about to be cleared).
func (b *Bucket) eval(now time.Time, window time.Duration, anyway bool) (value float64, ok bool) {
	live := b.pts[b.start:]
	if window <= 0 || len(live) == 0 {
		return 0, false
	}
	if !anyway && b.opts.MinPoints > 0 && len(live) < b.opts.MinPoints {
		return 0, false
	}
	nowN := now.UnixNano()
	if !anyway && b.opts.MinBucketSpan > 0 && float64(nowN-live[0].t)/float64(window) < b.opts.MinBucketSpan {
		return 0, false
	}
	from := nowN - int64(window)
	first := sort.Search(len(live), func(i int) bool { return live[i].t > from })
	in := live[first:]
	switch b.opts.Kind {
	case Sum:
		var sum float64
		for _, p := range in {
			sum += p.v
		}
		return sum / window.Seconds(), true
	case Counter:
		if len(in) < 2 {
			return 0, true
		}
		lo, hi := in[0], in[len(in)-1]
		dt := float64(hi.t-lo.t) / float64(time.Second)
		dv := hi.v - lo.v
		if dt <= 0 || dv < 0 {
			return 0, true
		}
		return dv / dt, true
	default: // Gauge
		if len(in) == 0 {
			return 0, true
		}
		var sum float64
		for _, p := range in {
			sum += p.v
		}
		return sum / float64(len(in)), true
	}
}
