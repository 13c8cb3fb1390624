package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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
	// CPURatio is the baseline's CPU time per message over the
	// scenario's, pair by pair (median, smallest, largest): above 1 the
	// scenario does a message's work with less CPU. On a loaded machine
	// it says more than the msgs/s ratio, which depends on the CPU share
	// each run got.
	CPURatioMedian float64 `json:"cpu_ratio_median"`
	CPURatioMin    float64 `json:"cpu_ratio_min"`
	CPURatioMax    float64 `json:"cpu_ratio_max"`
	// P99 are the medians of the runs' p99 latencies (µs).
	P99usMedian         float64 `json:"p99_us_median"`
	BaselineP99usMedian float64 `json:"baseline_p99_us_median"`
}

// ComparedRun is one pair: the scenario's run and the baseline's.
type ComparedRun struct {
	Scenario Result  `json:"scenario"`
	Baseline Result  `json:"baseline"`
	Ratio    float64 `json:"ratio"` // Scenario.MsgsPerSec / Baseline.MsgsPerSec
	// CPU time per message (µs, all the run's processes) of each, and
	// the baseline's over the scenario's.
	ScenarioCPUus float64 `json:"scenario_cpu_us_per_msg"`
	BaselineCPUus float64 `json:"baseline_cpu_us_per_msg"`
	CPURatio      float64 `json:"cpu_ratio"`
}

// cpuPerMsg is the CPU time (µs) all of r's processes used per message
// of its measured window; 0 when unknown.
func cpuPerMsg(r Result) float64 {
	var pct float64
	for _, p := range r.Processes {
		pct += p.CPUPercent
	}
	if r.MsgsPerSec <= 0 {
		return 0
	}
	return pct / 100 / r.MsgsPerSec * 1e6
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
		known := slices.Sorted(maps.Keys(baselineOf))
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
		pair.ScenarioCPUus, pair.BaselineCPUus = round3(cpuPerMsg(pair.Scenario)), round3(cpuPerMsg(pair.Baseline))
		if pair.ScenarioCPUus > 0 {
			pair.CPURatio = round3(pair.BaselineCPUus / pair.ScenarioCPUus)
		}
		c.Runs = append(c.Runs, pair)
	}
	var ratios, cpu, p99, bp99 []float64
	for _, r := range c.Runs {
		ratios = append(ratios, r.Ratio)
		cpu = append(cpu, r.CPURatio)
		p99 = append(p99, r.Scenario.P99us)
		bp99 = append(bp99, r.Baseline.P99us)
	}
	c.RatioMedian, c.RatioMin, c.RatioMax = median(ratios), slices.Min(ratios), slices.Max(ratios)
	c.CPURatioMedian, c.CPURatioMin, c.CPURatioMax = median(cpu), slices.Min(cpu), slices.Max(cpu)
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
	fmt.Fprintf(w, "%-5s %18s %18s %8s %10s %10s %9s %9s %9s\n", "pair", c.Scenario+" msgs/s", c.Baseline+" msgs/s", "ratio",
		"p99", "base p99", "cpu µs", "base µs", "cpu ratio")
	for i, r := range c.Runs {
		fmt.Fprintf(w, "%-5d %18s %18s %8.3f %10s %10s %9.3f %9.3f %9.3f\n", i+1,
			humanRate(r.Scenario.MsgsPerSec), humanRate(r.Baseline.MsgsPerSec), r.Ratio, us(r.Scenario.P99us), us(r.Baseline.P99us),
			r.ScenarioCPUus, r.BaselineCPUus, r.CPURatio)
	}
	fmt.Fprintf(w, "\nratio (msgs/s, %s / %s): median %.3f, range %.3f–%.3f\n", c.Scenario, c.Baseline, c.RatioMedian, c.RatioMin, c.RatioMax)
	fmt.Fprintf(w, "cpu ratio (CPU per message, %s / %s): median %.3f, range %.3f–%.3f\n", c.Baseline, c.Scenario, c.CPURatioMedian, c.CPURatioMin, c.CPURatioMax)
	fmt.Fprintf(w, "p99 median: %s %s, %s %s\n", c.Scenario, us(c.P99usMedian), c.Baseline, us(c.BaselineP99usMedian))
}
