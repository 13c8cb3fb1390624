package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/bench"
	"github.com/multimodule/multimodule/mmtest"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// Smoke runs of every scenario with small counts: the JSON has the shape
// the issue promises and messages flowed without errors. Never timing.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons, buses and external processes")
	}
	tests := []struct {
		name     string // the scenario, or scenario/variant
		opts     bench.Options
		flows    bool     // msgs_per_sec > 0 and nothing lost
		extras   []string // keys the result must have
		wantZero []string // extras that must be 0
	}{
		{"inproc", bench.Options{Duration: time.Second}, true, []string{"sent", "received"}, []string{"lost", "errors"}},
		{"inproc/scrape-metrics", bench.Options{Duration: time.Second, ScrapeMetrics: time.Second}, true,
			[]string{"scrapes"}, []string{"lost", "errors", "scrape_errors"}},
		{"external", bench.Options{Duration: time.Second}, true, []string{"sent", "received"}, []string{"lost", "errors"}},
		{"fanout", bench.Options{Duration: time.Second}, true, []string{"deliveries_per_sec"}, []string{"lost", "errors"}},
		{"cli", bench.Options{Duration: time.Second, Rate: 500}, true, []string{"send_processes"}, []string{"lost", "errors"}},
		{"scale", bench.Options{Duration: 500 * time.Millisecond, Tasks: 20, Externals: 2}, true,
			[]string{"internal_configured_s", "externals_ready_s", "idle_daemon_cpu_%", "idle_daemon_rss_mb"}, []string{"errors"}},
		{"restart", bench.Options{Duration: 500 * time.Millisecond, Kills: 1, KillGap: 200 * time.Millisecond, Rate: 500}, true,
			[]string{"restart_median_ms", "restart_max_ms"}, []string{"errors"}},
		{"migrate", bench.Options{Duration: 500 * time.Millisecond, Kills: 1, Rate: 500}, true,
			[]string{"to_external_ms", "to_internal_ms", "seq_gaps"}, []string{"errors", "seq_gaps", "seq_duplicates"}},
		{"exec", bench.Options{Duration: time.Second, Rate: 500, ExecDir: filepath.Join("..", "..", "examples", "exec")}, true,
			[]string{"sent", "received"}, []string{"lost", "errors"}},
		{"config", bench.Options{Duration: 500 * time.Millisecond, Configs: 3}, false,
			[]string{"config_p50_ms", "config_max_ms", "idle_daemon_cpu_%"}, []string{"errors"}},
		{"baseline-chan", bench.Options{Duration: time.Second}, true, []string{"sent", "received"}, []string{"lost", "errors"}},
		{"baseline-chan/open-loop", bench.Options{Duration: time.Second, Rate: 5000}, true, []string{"sent", "received"}, []string{"lost", "errors"}},
		{"baseline-jetstream", bench.Options{Duration: time.Second}, true, []string{"sent", "received", "batch"}, []string{"lost", "errors"}},
		{"baseline-jetstream/one-at-a-time", bench.Options{Duration: time.Second, Rate: 500, Batch: 1}, true,
			[]string{"sent", "received", "batch"}, []string{"lost", "errors"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.ExecDir != "" {
				mmtest.NeedInterpreter(t, filepath.Join(tc.opts.ExecDir, "PyEcho"))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			scenario, _, _ := strings.Cut(tc.name, "/")
			res, err := bench.Run(ctx, scenario, tc.opts)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			got := decode(t, res)
			checkShape(t, got, scenario)
			for _, k := range tc.extras {
				if _, ok := got[k]; !ok {
					t.Errorf("extra %q missing; got %v", k, got)
				}
			}
			for _, k := range tc.wantZero {
				if v, ok := got[k].(float64); !ok || v != 0 {
					t.Errorf("%s: got %v, want 0 (error sample: %v)", k, got[k], got["error_sample"])
				}
			}
			if tc.flows {
				if v, _ := got["msgs_per_sec"].(float64); v <= 0 {
					t.Errorf("msgs_per_sec: got %v, want > 0", got["msgs_per_sec"])
				}
			}
			if tc.opts.ScrapeMetrics > 0 {
				if v, _ := got["scrapes"].(float64); v <= 0 {
					t.Errorf("scrapes: got %v, want > 0", got["scrapes"])
				}
			} else if _, ok := got["scrapes"]; ok {
				t.Errorf("scrapes reported without ScrapeMetrics: %v", got["scrapes"])
			}
			if strings.HasPrefix(tc.name, "baseline-") && tc.opts.Rate > 0 {
				// Open loop: about Rate messages per second of the
				// warm-up and the window (a loaded machine may fall short).
				if v, _ := got["sent"].(float64); v <= 0 || v > tc.opts.Rate*1.3 {
					t.Errorf("sent: got %v at %v msgs/s for 1.2 s", got["sent"], tc.opts.Rate)
				}
			}
			if tc.name == "baseline-jetstream/one-at-a-time" && got["batch"] != float64(1) {
				t.Errorf("batch: got %v, want 1", got["batch"])
			}
			if tc.name == "baseline-jetstream" && got["batch"] != float64(bench.DefaultBatch) {
				t.Errorf("batch: got %v, want %d", got["batch"], bench.DefaultBatch)
			}
			if tc.name == "config" {
				if v, _ := got["config_changes"].(float64); v != 3 {
					t.Errorf("config_changes: got %v, want 3", got["config_changes"])
				}
			}
		})
	}
}

func decode(t *testing.T, res bench.Result) map[string]any {
	t.Helper()
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return m
}

// checkShape checks the fields every result has.
func checkShape(t *testing.T, got map[string]any, scenario string) {
	t.Helper()
	if got["scenario"] != scenario {
		t.Errorf("scenario: got %v, want %s", got["scenario"], scenario)
	}
	for _, k := range []string{"msgs_per_sec", "p50_us", "p90_us", "p99_us", "max_us"} {
		if _, ok := got[k].(float64); !ok {
			t.Errorf("%s: got %v (%T), want a number", k, got[k], got[k])
		}
	}
	procs, _ := got["processes"].([]any)
	names := map[string]bool{}
	for _, p := range procs {
		pm, _ := p.(map[string]any)
		name, _ := pm["name"].(string)
		names[name] = true
		if _, ok := pm["cpu_percent"].(float64); !ok {
			t.Errorf("process %v: cpu_percent missing", pm)
		}
		if rss, _ := pm["rss_bytes"].(float64); rss <= 0 {
			t.Errorf("process %v: rss_bytes got %v, want > 0", name, pm["rss_bytes"])
		}
	}
	want := []string{"daemon+bench", "bus"}
	if scenario == "baseline-chan" {
		want = []string{"bench"} // no daemon, no bus: one process
	}
	if scenario == "external" {
		// Its CPU is part of the scenario's cost per message.
		want = append(want, "external Consumer")
	}
	for _, want := range want {
		if !names[want] {
			t.Errorf("processes: %q missing; got %v", want, procs)
		}
	}
}

func TestExecWithoutPyEcho(t *testing.T) {
	_, err := bench.Run(t.Context(), "exec", bench.Options{Duration: time.Second, ExecDir: t.TempDir()})
	if !errors.Is(err, bench.ErrExecUnavailable) {
		t.Fatalf("got %v, want ErrExecUnavailable", err)
	}
}

func TestUnknownScenario(t *testing.T) {
	_, err := bench.Run(t.Context(), "nope", bench.Options{})
	if !errors.Is(err, bench.ErrUnknownScenario) || !strings.Contains(err.Error(), "inproc") {
		t.Fatalf("got %v, want ErrUnknownScenario listing the known ones", err)
	}
}

func TestScrapeMetricsNeedsFlow(t *testing.T) {
	_, err := bench.Run(t.Context(), "config", bench.Options{ScrapeMetrics: time.Second})
	if err == nil || !strings.Contains(err.Error(), "scrape-metrics") {
		t.Fatalf("Run config with ScrapeMetrics: got %v, want an error naming --scrape-metrics", err)
	}
}

// Compare runs a scenario and its baseline alternately and gives the
// ratio of their msgs/s; never timing.
func TestCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons and buses")
	}
	for _, tc := range []struct{ scenario, baseline string }{
		{"inproc", "baseline-chan"},
		{"external", "baseline-jetstream"},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			c, err := bench.Compare(ctx, tc.scenario, 2, bench.Options{Duration: 500 * time.Millisecond})
			if err != nil {
				t.Fatalf("Compare: %v", err)
			}
			if c.Scenario != tc.scenario || c.Baseline != tc.baseline || len(c.Runs) != 2 {
				t.Fatalf("got %s vs %s with %d runs, want %s vs %s with 2", c.Scenario, c.Baseline, len(c.Runs), tc.scenario, tc.baseline)
			}
			for i, r := range c.Runs {
				if r.Scenario.Scenario != tc.scenario || r.Baseline.Scenario != tc.baseline {
					t.Errorf("pair %d: got %s and %s", i+1, r.Scenario.Scenario, r.Baseline.Scenario)
				}
				if r.Ratio <= 0 || r.Scenario.MsgsPerSec <= 0 || r.Baseline.MsgsPerSec <= 0 {
					t.Errorf("pair %d: ratio %v of %v and %v msgs/s, want all > 0", i+1, r.Ratio, r.Scenario.MsgsPerSec, r.Baseline.MsgsPerSec)
				}
				if r.ScenarioCPUus <= 0 || r.BaselineCPUus <= 0 || r.CPURatio <= 0 {
					t.Errorf("pair %d: CPU per message %v and %v µs, ratio %v; want all > 0", i+1, r.ScenarioCPUus, r.BaselineCPUus, r.CPURatio)
				}
			}
			if c.CPURatioMin > c.CPURatioMedian || c.CPURatioMedian > c.CPURatioMax {
				t.Errorf("cpu ratio min %v, median %v, max %v: not in order", c.CPURatioMin, c.CPURatioMedian, c.CPURatioMax)
			}
			if c.RatioMin > c.RatioMedian || c.RatioMedian > c.RatioMax {
				t.Errorf("ratio min %v, median %v, max %v: not in order", c.RatioMin, c.RatioMedian, c.RatioMax)
			}
			var out strings.Builder
			bench.WriteComparison(&out, c)
			if !strings.Contains(out.String(), "ratio") || !strings.Contains(out.String(), tc.baseline) {
				t.Errorf("table: %q", out.String())
			}
		})
	}
}

func TestCompareWithoutBaseline(t *testing.T) {
	_, err := bench.Compare(t.Context(), "fanout", 1, bench.Options{})
	if !errors.Is(err, bench.ErrNoBaseline) || !strings.Contains(err.Error(), "inproc") {
		t.Fatalf("got %v, want ErrNoBaseline naming the scenarios that have one", err)
	}
}
