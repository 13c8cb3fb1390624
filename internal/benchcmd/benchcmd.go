// Package benchcmd is the `multimodule bench` command. It is added by the
// stock binary (cmd/multimodule) only: binaries built with
// multimodule.Main for one's own tasks, and test binaries, do not carry
// the benchmark scenarios or their Bench task namespace.
package benchcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/bench"
	"github.com/multimodule/multimodule/internal/cli"
)

type benchOptions struct {
	opts       bench.Options
	json       bool
	cpuprofile string
	memprofile string
	trace      string
	vsBaseline bool
	runs       int
}

// New returns the bench command (a cli.Command).
func New(*cli.Globals) *cobra.Command {
	o := &benchOptions{}
	var list strings.Builder
	for _, s := range bench.Scenarios() {
		fmt.Fprintf(&list, "  %-18s %s\n", s[0], s[1])
	}
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure MultiModule end to end: msgs/s, latency, CPU and memory",
		Long: `bench runs one standard performance scenario against a fresh temporary state
directory with its own embedded bus and daemon (hosted in this process, so
--cpuprofile covers it), with real external and CLI processes where the
scenario has them, then cleans everything up. -s and -T are not used. The
temporary directory is made under $TMPDIR (default /tmp): scale creates
thousands of files there, so put it on the file system you mean to measure.

Latency is from the producer's emit (a timestamp in the message) to the
consumer's handler. Without --rate the producer is closed-loop (as fast
as the pipeline takes messages); with --rate it emits at that fixed rate.
A warm-up of duration/5 (at most 2 s) runs before the measured window.

Scenarios:
` + list.String(),
		Example: `  multimodule bench inproc
  multimodule bench inproc --rate 500000 --duration 20s
  multimodule bench external --json
  multimodule bench scale --tasks 1000 --externals 50
  multimodule bench restart --kills 10
  multimodule bench inproc --cpuprofile cpu.out && go tool pprof -top cpu.out
  multimodule bench inproc --vs-baseline --runs 5 --duration 5s
  multimodule bench external --vs-baseline --batch 1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd, args[0], o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "print one JSON object instead of the table")
	f.DurationVar(&o.opts.Duration, "duration", 10*time.Second, "measured time (plus a warm-up of duration/5, at most 2s)")
	f.IntVar(&o.opts.Size, "size", 200, "message size in bytes (as encoded on the bus)")
	f.Float64Var(&o.opts.Rate, "rate", 0, "fixed producer rate in msgs/s (open loop); 0: as fast as possible (closed loop)")
	f.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process (the daemon and the harness) to this file")
	f.StringVar(&o.memprofile, "memprofile", "", "write a heap profile of this process to this file at the end")
	f.StringVar(&o.trace, "trace", "", "write a runtime execution trace of this process to this file (large: keep --duration short; read it with go tool trace)")
	f.IntVar(&o.opts.Tasks, "tasks", 1000, "scale: internal tasks (at most 10000)")
	f.IntVar(&o.opts.Externals, "externals", 50, "scale: external tasks (at most 200)")
	f.DurationVar(&o.opts.Settle, "settle", 2*time.Second, "scale: quiet time between the last task ready and the idle window (over 5m: past the monitor's cutoff age, the steady idle)")
	f.IntVar(&o.opts.Kills, "kills", 0, "restart: kill -9s (default 10); migrate: round trips (default 3)")
	f.DurationVar(&o.opts.KillGap, "kill-gap", 10500*time.Millisecond, "restart: healthy run time before each kill (over 10s: every kill is a first crash, not a crash loop)")
	f.IntVar(&o.opts.Configs, "configs", 20, "config: config changes to time")
	f.StringVar(&o.opts.ExecDir, "exec-dir", "examples/exec", "exec: the directory of exec tasks holding PyEcho")
	f.DurationVar(&o.opts.ScrapeMetrics, "scrape-metrics", 0, "inproc, external, fanout, exec: serve HTTP on a loopback port and GET /metrics at this interval during the measured window (alone: every 1s; with a value: --scrape-metrics=500ms); fails the run if a scrape fails")
	f.Lookup("scrape-metrics").NoOptDefVal = "1s"
	f.IntVar(&o.opts.Batch, "batch", 64, "baseline-jetstream: messages published before waiting for their acknowledgements (1: one synchronous publish per message)")
	f.BoolVar(&o.vsBaseline, "vs-baseline", false, "inproc, external: run the scenario and its baseline (baseline-chan, baseline-jetstream) --runs times each, alternating, and print the ratio of their msgs/s")
	f.IntVar(&o.runs, "runs", 3, "with --vs-baseline: pairs of runs")
	f.BoolVar(&o.opts.Keep, "keep", false, "keep the temporary state directory (its path is printed)")
	return cmd
}

func runBench(cmd *cobra.Command, name string, o *benchOptions) (err error) {
	stderr := cmd.ErrOrStderr()
	if isTerminal(stderr) {
		o.opts.Progress = stderr
	}
	o.opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, p := range []struct {
		flag, path string
		start      func(io.Writer) error
		stop       func()
	}{
		{"cpuprofile", o.cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{"trace", o.trace, trace.Start, trace.Stop},
	} {
		if p.path == "" {
			continue
		}
		f, err := os.Create(p.path)
		if err != nil {
			return fmt.Errorf("bench: --%s: %w", p.flag, err)
		}
		defer f.Close()
		if err := p.start(f); err != nil {
			return fmt.Errorf("bench: --%s: %w", p.flag, err)
		}
		defer p.stop()
	}
	if o.vsBaseline {
		return runComparison(cmd, name, o)
	}
	res, err := bench.Run(cmd.Context(), name, o.opts)
	if err != nil {
		return err
	}
	if o.memprofile != "" {
		if err := writeHeapProfile(o.memprofile); err != nil {
			return err
		}
	}
	out := cmd.OutOrStdout()
	if o.json {
		b, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("bench: encode result: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	bench.WriteTable(out, res)
	return nil
}

func runComparison(cmd *cobra.Command, name string, o *benchOptions) error {
	c, err := bench.Compare(cmd.Context(), name, o.runs, o.opts)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if o.json {
		b, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("bench: encode result: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	bench.WriteComparison(out, c)
	return nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: --memprofile: %w", err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: --memprofile: %w", err)
	}
	return f.Close()
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
