package monitor

import (
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the start of every test's timeline.
var t0 = time.Unix(1_700_000_000, 0)

// at returns t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// sec is s seconds as a Duration.
func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// pt is a point for tables.
type pt struct{ t, v float64 }

// fill returns a bucket of the kind holding pts, with the gating checks
// off unless opts turns them on.
func fill(t *testing.T, opts BucketOptions, pts ...pt) *Bucket {
	t.Helper()
	b := NewBucket(opts)
	for _, p := range pts {
		b.Add(at(p.t), p.v)
	}
	return b
}

// near reports whether got and want agree to 1e-9.
func near(got, want float64) bool { return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want)) }

func TestBucketEval(t *testing.T) {
	noGate := func(k Kind) BucketOptions { return BucketOptions{Kind: k, MinPoints: -1, MinBucketSpan: -1} }
	tests := []struct {
		name   string
		opts   BucketOptions
		pts    []pt
		now    float64
		window float64
		want   float64
		wantOK bool
	}{
		{"gauge mean", noGate(Gauge), []pt{{0, 1}, {10, 2}, {20, 3}}, 20, 60, 2, true},
		{"gauge only points strictly newer than now-W", noGate(Gauge), []pt{{0, 100}, {10, 2}, {20, 4}}, 60, 50, 4, true},
		{"gauge no point in window is 0", noGate(Gauge), []pt{{0, 5}, {1, 5}, {2, 5}}, 100, 10, 0, true},
		{"sum divided by window", noGate(Sum), []pt{{10, 1}, {20, 1}, {30, 1}}, 30, 60, 3.0 / 60, true},
		{"sum only points strictly newer than now-W", noGate(Sum), []pt{{0, 1}, {20, 1}, {40, 1}}, 60, 60, 2.0 / 60, true},
		{"sum no point in window is 0", noGate(Sum), []pt{{0, 1}}, 100, 10, 0, true},
		{"counter first to last", noGate(Counter), []pt{{0, 100}, {10, 150}, {20, 300}}, 20, 60, 10, true},
		{"counter only points in window", noGate(Counter), []pt{{0, 0}, {30, 100}, {50, 300}}, 60, 40, 10, true},
		{"counter one point in window is 0", noGate(Counter), []pt{{0, 0}, {30, 100}}, 60, 40, 0, true},
		{"counter reset is 0", noGate(Counter), []pt{{0, 100}, {10, 5}, {20, 50}}, 20, 60, 0, true},
		{"counter equal times is 0", noGate(Counter), []pt{{10, 1}, {10, 5}}, 10, 60, 0, true},
		{"counter late point goes in its place", noGate(Counter), []pt{{10, 0}, {30, 100}, {20, 10}}, 30, 60, 5, true},
		{"zero window gives no value", noGate(Gauge), []pt{{0, 1}}, 0, 0, 0, false},
		{"empty bucket gives no value", noGate(Gauge), nil, 0, 60, 0, false},
		{"too few points", BucketOptions{Kind: Gauge, MinPoints: 3, MinBucketSpan: -1}, []pt{{0, 1}, {1, 1}}, 1, 60, 0, false},
		{"enough points", BucketOptions{Kind: Gauge, MinPoints: 3, MinBucketSpan: -1}, []pt{{0, 1}, {1, 1}, {2, 1}}, 2, 60, 1, true},
		{"span too short", BucketOptions{Kind: Gauge, MinPoints: -1, MinBucketSpan: 0.5}, []pt{{0, 1}}, 29, 60, 0, false},
		{"span just long enough", BucketOptions{Kind: Gauge, MinPoints: -1, MinBucketSpan: 0.5}, []pt{{0, 1}}, 30, 60, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := fill(t, tt.opts, tt.pts...)
			got, ok := b.Eval(at(tt.now), sec(tt.window))
			if ok != tt.wantOK || !near(got, tt.want) {
				t.Errorf("Eval: got (%v, %v), want (%v, %v)", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestBucketFirstValue checks the SPEC's gating with the default options
// and one sample a second: a window first reports once the oldest point
// is half a window old.
func TestBucketFirstValue(t *testing.T) {
	tests := []struct {
		name   string
		kind   Kind
		window float64
		want   float64 // seconds after the first sample
	}{
		{"gauge one minute", Gauge, 60, 30},
		{"sum one minute", Sum, 60, 30},
		{"counter one minute", Counter, 60, 30},
		{"gauge five minutes", Gauge, 300, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBucket(BucketOptions{Kind: tt.kind})
			first := -1.0
			for s := 0.0; s <= 300; s++ {
				b.Add(at(s), 1)
				if _, ok := b.Eval(at(s), sec(tt.window)); ok {
					first = s
					break
				}
			}
			if first != tt.want {
				t.Errorf("first value after %v s, want %v s", first, tt.want)
			}
		})
	}
}

func TestBucketDefaults(t *testing.T) {
	b := NewBucket(BucketOptions{})
	want := BucketOptions{Kind: Gauge, CutoffAge: 300 * time.Second, MinPoints: 3, MinBucketSpan: 0.5}
	if b.opts != want {
		t.Errorf("options: got %+v, want %+v", b.opts, want)
	}
	b = NewBucket(BucketOptions{MinPoints: -1, MinBucketSpan: -1, CutoffAge: time.Second})
	b.Add(at(0), 7)
	if got, ok := b.Eval(at(0), time.Minute); !ok || got != 7 {
		t.Errorf("checks off, one point: got (%v, %v), want (7, true)", got, ok)
	}
}

func TestBucketPrune(t *testing.T) {
	t.Run("add drops points older than the cutoff age", func(t *testing.T) {
		b := NewBucket(BucketOptions{})
		for s := 0.0; s <= 400; s++ {
			b.Add(at(s), s)
		}
		// Points 100..400 remain: 100 is exactly 300 s old and stays.
		if got, want := b.Len(), 301; got != want {
			t.Fatalf("Len: got %d, want %d", got, want)
		}
		if got := time.Unix(0, b.pts[b.start].t); !got.Equal(at(100)) {
			t.Errorf("oldest point: got %v, want %v", got.Sub(t0), sec(100))
		}
	})
	t.Run("prune empties the bucket", func(t *testing.T) {
		b := fill(t, BucketOptions{}, pt{0, 1}, pt{1, 1})
		if empty := b.Prune(at(300)); empty {
			t.Errorf("Prune at 300 s: got empty, want the point at 0 s kept (exactly 300 s old)")
		}
		if empty := b.Prune(at(301.5)); !empty || b.Len() != 0 {
			t.Errorf("Prune at 301.5 s: got empty=%v Len=%d, want true 0", empty, b.Len())
		}
	})
	t.Run("memory stays bounded", func(t *testing.T) {
		b := NewBucket(BucketOptions{})
		for s := 0.0; s < 20000; s++ {
			b.Add(at(s), s)
		}
		if got, want := b.Len(), 301; got != want {
			t.Errorf("Len: got %d, want %d", got, want)
		}
		if c := cap(b.pts); c > 2048 {
			t.Errorf("cap of the point array: got %d, want ≤ 2048 for 301 live points", c)
		}
	})
}

func TestKindString(t *testing.T) {
	for _, k := range []Kind{Gauge, Sum, Counter} {
		got, err := ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q): got (%v, %v), want (%v, nil)", k.String(), got, err, k)
		}
	}
	if _, err := ParseKind("histogram"); err == nil {
		t.Errorf("ParseKind(histogram): got nil error, want one")
	}
}
