package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Comparison is a scenario measured against its hand-written baseline,
// run for run in the same invocation.
type Comparison struct {
	Scenario string `json:"scenario"`
	Baseline string `json:"baseline"`
	// Runs are the pairs, in the order they ran.
	Runs []ComparedRun `json:"runs"`
	// Ratio is the scenario's msgs/s over the baseline's, pair by pair:
	// the median, the smallest and the largest.
	RatioMedian float64 `json:"ratio_median"`
	RatioMin    float64 `json:"ratio_min"`
	RatioMax    float64 `json:"ratio_max"`
	// P99 are the medians of the runs' p99 latencies (µs).
	P99usMedian         float64 `json:"p99_us_median"`
	BaselineP99usMedian float64 `json:"baseline_p99_us_median"`
}

// ComparedRun is one pair: the scenario's run and the baseline's.
type ComparedRun struct {
	Scenario Result  `json:"scenario"`
	Baseline Result  `json:"baseline"`
	Ratio    float64 `json:"ratio"` // Scenario.MsgsPerSec / Baseline.MsgsPerSec
}

// ErrNoBaseline is wrapped when Compare is given a scenario without a
// baseline.
var ErrNoBaseline = errors.New("bench: no baseline for this scenario")

// Compare runs scenario name and its baseline (inproc: baseline-chan;
// external: baseline-jetstream) runs times each, alternating, with the
// same options, and returns the ratios of their msgs/s. The order swaps
// every pair (scenario first, then baseline first, …), so that the
// machine's drift and the slower first run after a start fall on both.
func Compare(ctx context.Context, name string, runs int, opts Options) (Comparison, error) {
	base, ok := baselineOf[name]
	if !ok {
		known := slices.Sorted(func(yield func(string) bool) {
			for k := range baselineOf {
				if !yield(k) {
					return
				}
			}
		})
		return Comparison{}, fmt.Errorf("%w: %q (scenarios with one: %s)", ErrNoBaseline, name, strings.Join(known, ", "))
	}
	if runs <= 0 {
		return Comparison{}, fmt.Errorf("bench %s: %d runs: want at least 1", name, runs)
	}
	c := Comparison{Scenario: name, Baseline: base}
	for i := range runs {
		order := []string{name, base}
		if i%2 == 1 {
			order = []string{base, name}
		}
		var pair ComparedRun
		for _, n := range order {
			res, err := Run(ctx, n, opts)
			if err != nil {
				return c, fmt.Errorf("pair %d: %w", i+1, err)
			}
			if n == name {
				pair.Scenario = res
			} else {
				pair.Baseline = res
			}
		}
		if pair.Baseline.MsgsPerSec > 0 {
			pair.Ratio = round3(pair.Scenario.MsgsPerSec / pair.Baseline.MsgsPerSec)
		}
		c.Runs = append(c.Runs, pair)
	}
	var ratios, p99, bp99 []float64
	for _, r := range c.Runs {
		ratios = append(ratios, r.Ratio)
		p99 = append(p99, r.Scenario.P99us)
		bp99 = append(bp99, r.Baseline.P99us)
	}
	c.RatioMedian, c.RatioMin, c.RatioMax = median(ratios), slices.Min(ratios), slices.Max(ratios)
	c.P99usMedian, c.BaselineP99usMedian = median(p99), median(bp99)
	return c, nil
}

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// WriteComparison writes c as a human-readable table.
func WriteComparison(w io.Writer, c Comparison) {
	fmt.Fprintf(w, "%s vs %s, %d alternating pairs\n\n", c.Scenario, c.Baseline, len(c.Runs))
	fmt.Fprintf(w, "%-5s %12s %12s %8s %10s %10s\n", "pair", c.Scenario, c.Baseline, "ratio", "p99", "base p99")
	for i, r := range c.Runs {
		fmt.Fprintf(w, "%-5d %12s %12s %8.3f %10s %10s\n", i+1,
			humanRate(r.Scenario.MsgsPerSec), humanRate(r.Baseline.MsgsPerSec), r.Ratio, us(r.Scenario.P99us), us(r.Baseline.P99us))
	}
	fmt.Fprintf(w, "\nratio (msgs/s, %s / %s): median %.3f, range %.3f–%.3f\n", c.Scenario, c.Baseline, c.RatioMedian, c.RatioMin, c.RatioMax)
	fmt.Fprintf(w, "p99 median: %s %s, %s %s\n", c.Scenario, us(c.P99usMedian), c.Baseline, us(c.BaselineP99usMedian))
}
