package tasks

import (
	"math/bits"
	"strconv"

	"github.com/multimodule/multimodule/message"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a bucket is at most 1/32 (3 %) wide relative to its values.
const subBits = 5

// histBuckets covers values up to 2^58 ns (years).
const histBuckets = (58 - subBits + 1) << subBits

// Histogram counts non-negative values (nanoseconds) in log-linear
// buckets. The zero value is ready to use. It is mergeable: reports carry
// cumulative sparse histograms, and a window is the difference of two.
type Histogram struct {
	counts [histBuckets]uint64
	total  uint64
}

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2<<subBits {
		return int(u)
	}
	e := bits.Len64(u) - subBits - 1
	i := e<<subBits + int(u>>e)
	return min(i, histBuckets-1)
}

// bucketUpper is the largest value bucket i holds.
func bucketUpper(i int) int64 {
	if i < 2<<subBits {
		return int64(i)
	}
	e := i>>subBits - 1
	m := int64(i - e<<subBits)
	return (m+1)<<e - 1
}

// Record counts one value.
func (h *Histogram) Record(v int64) {
	h.counts[bucketOf(v)]++
	h.total++
}

// Total is the number of values recorded.
func (h *Histogram) Total() uint64 { return h.total }

// Quantile returns the upper bound of the bucket holding quantile q
// (0 < q ≤ 1), or 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return bucketUpper(i)
		}
	}
	return bucketUpper(histBuckets - 1)
}

// Sparse returns the non-empty buckets as a message value (bucket index
// as text → count).
func (h *Histogram) Sparse() map[string]any {
	out := map[string]any{}
	for i, c := range h.counts {
		if c != 0 {
			out[strconv.Itoa(i)] = int64(c)
		}
	}
	return out
}

// AddSparse adds (sign +1) or subtracts (sign -1) a sparse histogram as
// Sparse made it.
func (h *Histogram) AddSparse(v any, sign int64) {
	m, _ := v.(map[string]any)
	for k, cv := range m {
		i, err := strconv.Atoi(k)
		c, ok := message.Int(cv)
		if err != nil || !ok || i < 0 || i >= histBuckets {
			continue
		}
		d := uint64(c)
		if sign < 0 {
			h.counts[i] -= d
			h.total -= d
		} else {
			h.counts[i] += d
			h.total += d
		}
	}
}
