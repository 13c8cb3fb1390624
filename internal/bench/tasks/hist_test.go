package tasks

import "testing"

func TestHistogramQuantile(t *testing.T) {
	tests := []struct {
		name   string
		values []int64
		q      float64
		lo, hi int64 // the answer must lie in [lo, hi]
	}{
		{"empty", nil, 0.5, 0, 0},
		{"small exact", []int64{1, 2, 3, 4, 5}, 0.5, 3, 3},
		{"max of one", []int64{1_000_000}, 1, 1_000_000, 1_031_250},
		{"p99 of 1..1000 µs", seq(1000, 1000), 0.99, 990_000, 1_021_000},
		{"p50 of 1..1000 µs", seq(1000, 1000), 0.5, 500_000, 516_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tc.values {
				h.Record(v)
			}
			if got := h.Quantile(tc.q); got < tc.lo || got > tc.hi {
				t.Errorf("got %d, want in [%d, %d]", got, tc.lo, tc.hi)
			}
		})
	}
}

func TestHistogramSparseRoundTrip(t *testing.T) {
	var a, b Histogram
	for _, v := range seq(500, 7) {
		a.Record(v)
	}
	b.AddSparse(a.Sparse(), 1)
	if b.Total() != a.Total() || b.Quantile(0.9) != a.Quantile(0.9) {
		t.Fatalf("got total %d p90 %d, want %d %d", b.Total(), b.Quantile(0.9), a.Total(), a.Quantile(0.9))
	}
	b.AddSparse(a.Sparse(), -1)
	if b.Total() != 0 || b.Quantile(0.5) != 0 {
		t.Fatalf("after subtracting: got total %d, want 0", b.Total())
	}
}

func TestBucketBounds(t *testing.T) {
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 123456789} {
		i := bucketOf(v)
		if up := bucketUpper(i); up < v {
			t.Errorf("value %d: bucket %d upper %d, want ≥ value", v, i, up)
		}
		if i > 0 && bucketUpper(i-1) >= v {
			t.Errorf("value %d: previous bucket upper %d, want < value", v, bucketUpper(i-1))
		}
	}
}

func seq(n int, step int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i+1) * step
	}
	return out
}
