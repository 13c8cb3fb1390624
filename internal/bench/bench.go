// Package bench runs MultiModule's standard performance scenarios
// end to end (`multimodule bench SCENARIO`): each against a fresh
// temporary state directory with its own embedded bus, a daemon hosted in
// the calling process (so CPU and memory profiles of the bench process
// cover the daemon) and, where the scenario needs them, real external task
// processes started the normal way (the daemon re-executes this program
// with -m <Task>). Everything started is stopped and the state directory
// removed when the scenario ends.
//
// Latency is measured from the producer's emit (a timestamp in the
// message, bench_ts) to the consumer's handler, on the same box's clock;
// consumers record it in log-linear histograms (3 % buckets) and report
// them on a queue, so percentiles are exact to a bucket and include every
// message of the measured window.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	// The Bench task namespace: the scenarios' daemons and their external
	// processes (this binary, started with -m) load its tasks.
	_ "github.com/multimodule/multimodule/internal/bench/tasks"
)

// Options are the knobs of a scenario run. Zero values take the defaults
// documented on each field.
type Options struct {
	// Duration is the measured time (default 10 s). A warm-up of
	// Duration/5 (at most 2 s) runs before it.
	Duration time.Duration
	// Size is the message size in bytes, as encoded on the bus (default 200).
	Size int
	// Rate is the producer's fixed rate in messages per second (open
	// loop); 0 means as fast as the pipeline takes them (closed loop).
	Rate float64
	// Tasks and Externals size the scale scenario (default 1000 and 50).
	Tasks, Externals int
	// Settle is how long the scale scenario waits, once every task is
	// ready, before its idle window (default 2 s). The daemon's monitor
	// records every task that had an event (a load) for its cutoff age,
	// 5 minutes: a Settle over that measures a daemon idle for good.
	Settle time.Duration
	// Kills is the number of kill -9s (restart) or migration round trips
	// (migrate); default 10 and 3.
	Kills int
	// KillGap is the healthy run time before each kill in the restart
	// scenario (default 10.5 s: longer than the supervisor's back-off
	// reset, so each kill measures a first crash, not a crash loop).
	KillGap time.Duration
	// Configs is the number of config changes timed by the config
	// scenario (default 20).
	Configs int
	// ExecDir is the directory of exec tasks holding PyEcho for the exec
	// scenario (default examples/exec, relative to the working directory).
	ExecDir string
	// Batch is the number of messages baseline-jetstream publishes before
	// it waits for their acknowledgements (default DefaultBatch; 1 is one
	// synchronous publish per message).
	Batch int
	// ScrapeMetrics, when positive, starts the daemon with its HTTP
	// listener on a loopback port and GETs /metrics at this interval
	// during the measured window (the flow scenarios only: inproc,
	// external, fanout, exec); 0 leaves the listener off.
	ScrapeMetrics time.Duration
	// Keep leaves the temporary state directory in place.
	Keep bool
	// Progress, when set, receives a live progress line (carriage
	// returns, no newlines) about every 250 ms.
	Progress io.Writer
	// Logger receives the harness' own diagnostics; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Size <= 0 {
		o.Size = 200
	}
	if o.Tasks <= 0 {
		o.Tasks = 1000
	}
	if o.Externals <= 0 {
		o.Externals = 50
	}
	if o.KillGap <= 0 {
		o.KillGap = 10500 * time.Millisecond
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Configs <= 0 {
		o.Configs = 20
	}
	if o.ExecDir == "" {
		o.ExecDir = filepath.Join("examples", "exec")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

func (o *Options) warmup() time.Duration { return min(o.Duration/5, 2*time.Second) }

// Process is one process' resource use during the measured window.
type Process struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	CPUPercent float64 `json:"cpu_percent"` // 100 = one core busy
	RSSBytes   uint64  `json:"rss_bytes"`   // the largest resident size seen
}

// Result is what a scenario measured. It encodes as one JSON object: the
// fixed fields below plus the scenario's Extras at the top level.
type Result struct {
	Scenario   string    `json:"scenario"`
	MsgsPerSec float64   `json:"msgs_per_sec"`
	P50us      float64   `json:"p50_us"`
	P90us      float64   `json:"p90_us"`
	P99us      float64   `json:"p99_us"`
	Maxus      float64   `json:"max_us"`
	Processes  []Process `json:"processes"`
	// Extras are scenario-specific figures (sent, received, errors,
	// start-up times, …).
	Extras map[string]any `json:"-"`
}

// MarshalJSON puts Extras beside the fixed fields.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	b, err := json.Marshal(plain(r))
	if err != nil || len(r.Extras) == 0 {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range r.Extras {
		if _, fixed := m[k]; !fixed {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// scenario is one runnable scenario: run gets a fresh env (daemon, bus,
// state directory); bare, when set instead, runs without one.
type scenario struct {
	name string
	doc  string
	run  func(ctx context.Context, e *env) (Result, error)
	bare func(ctx context.Context, opts *Options) (Result, error)
}

var scenarios = []scenario{
	{name: "inproc", doc: "producer → Router → consumer inside one daemon", run: runInproc},
	{name: "external", doc: "producer (internal) → Router → external stateful consumer, across the bus", run: runExternal},
	{name: "fanout", doc: "one producer, Router with 10 routes of which 4 match, one forward each", run: runFanout},
	{name: "exec", doc: "producer → Python exec echo task → consumer", run: runExec},
	{name: "cli", doc: "`send` processes → Relay task → Router → `recv --follow`", run: runCLI},
	{name: "scale", doc: "1,000 internal and 50 external tasks: start-up, idle CPU and RSS, then all busy", run: runScale},
	{name: "restart", doc: "kill -9 of an external consumer under load: time until its replacement handles messages", run: runRestart},
	{name: "migrate", doc: "internal ↔ external migration of a consumer under load: time to the first message at the new place, nothing lost or reordered", run: runMigrate},
	{name: "config", doc: "config change → SetConfig latency, and an idle daemon's CPU", run: runConfig},
	{name: "baseline-chan", doc: "inproc's work in plain Go: producer → route match + map clone → consumer, 3 goroutines, 2 buffered channels", bare: runBaselineChan},
	{name: "baseline-jetstream", doc: "external's work in plain JetStream: publish in batches of --batch (64), pull consumer acknowledging every --batch-th message", run: runBaselineJetStream},
}

// scrapable are the scenarios measured by env.flow, the only ones that
// scrape /metrics during their measured window.
var scrapable = map[string]bool{"inproc": true, "external": true, "fanout": true, "exec": true}

// Scenarios lists the scenario names with a one-line description each.
func Scenarios() [][2]string {
	out := make([][2]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = [2]string{s.name, s.doc}
	}
	return out
}

// ErrUnknownScenario is wrapped when Run is given a name it does not know.
var ErrUnknownScenario = errors.New("bench: unknown scenario")

// Run runs one scenario and returns its figures. It blocks for about
// opts.Duration plus set-up and clean-up; ctx cancels it (clean-up still
// runs).
func Run(ctx context.Context, name string, opts Options) (Result, error) {
	opts.defaults()
	i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
	if i < 0 {
		names := make([]string, len(scenarios))
		for i, s := range scenarios {
			names[i] = s.name
		}
		return Result{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownScenario, name, strings.Join(names, ", "))
	}
	if opts.ScrapeMetrics < 0 {
		return Result{}, fmt.Errorf("bench %s: scrape interval %v: want a positive duration", name, opts.ScrapeMetrics)
	}
	if opts.ScrapeMetrics > 0 && !scrapable[name] {
		return Result{}, fmt.Errorf("bench %s: --scrape-metrics measures a message flow: only with inproc, external, fanout or exec", name)
	}
	if name == "exec" {
		dir, err := filepath.Abs(opts.ExecDir)
		if err != nil {
			return Result{}, err
		}
		if _, err := os.Stat(filepath.Join(dir, "PyEcho")); err != nil {
			return Result{}, fmt.Errorf("%w: no PyEcho in %s (run from the repository root or pass --exec-dir): %v", ErrExecUnavailable, dir, err)
		}
		opts.ExecDir = dir
	}
	if sc := scenarios[i]; sc.bare != nil {
		res, err := sc.bare(ctx, &opts)
		if err != nil {
			return res, fmt.Errorf("bench %s: %w", name, err)
		}
		res.Scenario = name
		res.Extras["errors"] = 0
		return res, nil
	}
	e, err := newEnv(ctx, name, &opts)
	if err != nil {
		return Result{}, fmt.Errorf("bench %s: set up: %w", name, err)
	}
	res, err := scenarios[i].run(ctx, e)
	if cerr := e.close(); cerr != nil {
		opts.Logger.Warn("bench: clean-up", "scenario", name, "error", cerr)
	}
	if err != nil {
		if ctx.Err() != nil {
			// Say who stopped us (a signal, through the command's context).
			err = fmt.Errorf("%w (cancelled: %v)", err, context.Cause(ctx))
		}
		return res, fmt.Errorf("bench %s: %w", name, err)
	}
	res.Scenario = name
	if res.Extras == nil {
		res.Extras = map[string]any{}
	}
	res.Extras["errors"] = e.errorCount()
	if msgs := e.errorSample(); len(msgs) > 0 {
		res.Extras["error_sample"] = msgs
	}
	return res, nil
}

// WriteTable writes r as a human-readable table.
func WriteTable(w io.Writer, r Result) {
	fmt.Fprintf(w, "scenario     %s\n", r.Scenario)
	fmt.Fprintf(w, "msgs/s       %s\n", humanRate(r.MsgsPerSec))
	fmt.Fprintf(w, "latency      p50 %s  p90 %s  p99 %s  max %s\n", us(r.P50us), us(r.P90us), us(r.P99us), us(r.Maxus))
	fmt.Fprintf(w, "\n%-28s %8s %8s %10s\n", "process", "pid", "cpu %", "rss MB")
	procs := r.Processes
	if len(procs) > 12 {
		procs = groupProcesses(procs)
	}
	for _, p := range procs {
		pid := fmt.Sprint(p.PID)
		if p.PID == 0 {
			pid = "-"
		}
		fmt.Fprintf(w, "%-28s %8s %8.1f %10.1f\n", p.Name, pid, p.CPUPercent, float64(p.RSSBytes)/(1<<20))
	}
	if len(r.Extras) > 0 {
		fmt.Fprintln(w)
		for _, k := range slices.Sorted(maps.Keys(r.Extras)) {
			fmt.Fprintf(w, "%-28s %v\n", k, formatExtra(r.Extras[k]))
		}
	}
}

// groupProcesses folds the externals of a big run into one row (sum of
// CPU, largest RSS), for the table only.
func groupProcesses(ps []Process) []Process {
	var out []Process
	ext := Process{Name: "externals"}
	n := 0
	for _, p := range ps {
		if strings.HasPrefix(p.Name, "external ") {
			ext.CPUPercent += p.CPUPercent
			ext.RSSBytes = max(ext.RSSBytes, p.RSSBytes)
			n++
			continue
		}
		out = append(out, p)
	}
	ext.Name = fmt.Sprintf("externals ×%d (cpu sum, max rss)", n)
	return append(out, ext)
}

func formatExtra(v any) string {
	switch t := v.(type) {
	case float64:
		return fmt.Sprintf("%.3f", t)
	case []string:
		return strings.Join(t, " | ")
	}
	return fmt.Sprint(v)
}

func us(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 10000:
		return fmt.Sprintf("%.1fms", v/1000)
	default:
		return fmt.Sprintf("%.0fµs", v)
	}
}

func humanRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.1f", v)
}
