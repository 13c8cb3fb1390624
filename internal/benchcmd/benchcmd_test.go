package benchcmd_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/multimodule/multimodule/internal/benchcmd"
	"github.com/multimodule/multimodule/internal/cli"
	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/mmtest"
)

// TestMain: a child the harness starts runs the command line with the
// bench command, as the stock binary does.
func TestMain(m *testing.M) {
	if os.Getenv(mmtest.EnvMain) == "1" {
		os.Exit(cli.Main(benchcmd.New))
	}
	mmtest.Main(m)
}

// The command prints one JSON object with --json and leaves no temporary
// state directory behind.
func TestBenchCommandJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon and a bus")
	}
	tmp := t.TempDir()
	got := benchJSON(t, tmp, "bench", "inproc", "--duration", "1s", "--json")
	for _, k := range []string{"scenario", "msgs_per_sec", "p99_us", "sent", "received", "lost"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing; got %v", k, got)
		}
	}
	if got["scenario"] != "inproc" || got["lost"] != float64(0) {
		t.Errorf("got scenario %v, lost %v; want inproc, 0", got["scenario"], got["lost"])
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "multimodule-bench-*"))
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatal(err)
	}
}

// --vs-baseline prints the comparison as one JSON object with the ratio.
func TestBenchCommandVsBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon and a bus")
	}
	got := benchJSON(t, t.TempDir(), "bench", "inproc", "--vs-baseline", "--runs", "1", "--duration", "500ms", "--json")
	if got["baseline"] != "baseline-chan" {
		t.Errorf("baseline: got %v, want baseline-chan", got["baseline"])
	}
	if r, _ := got["ratio_median"].(float64); r <= 0 {
		t.Errorf("ratio_median: got %v, want > 0", got["ratio_median"])
	}
	if runs, _ := got["runs"].([]any); len(runs) != 1 {
		t.Errorf("runs: got %v, want 1 pair", got["runs"])
	}
}

// baseline-chan runs with the heap goal a daemon's collector keeps
// (daemon.DefaultHeapFloor), as it does after inproc in a --vs-baseline
// run. A fresh process, so that no daemon of this test binary's has
// tuned its collector: its GC percentage is the one the scenario set.
func TestBaselineChanHeapFloor(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: the floor is off by design")
	}
	got := benchJSON(t, t.TempDir(), "bench", "baseline-chan", "--duration", "500ms", "--json")
	// With a live heap far under the floor, the runtime's goal is
	// 4 MB × percent / 100: the floor's percentage.
	want := float64(daemon.DefaultHeapFloor * 100 / (4 << 20))
	if got["gc_percent"] != want {
		t.Errorf("gc_percent: got %v, want %v", got["gc_percent"], want)
	}
}

// benchJSON runs the command with args (which end in --json) in a fresh
// environment, with TMPDIR set to tmp, and returns its one JSON object.
func benchJSON(t *testing.T, tmp string, args ...string) map[string]any {
	t.Helper()
	env := mmtest.NewEnv(t)
	cmd := env.Command(args...)
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output %q is not one JSON object: %v", out, err)
	}
	return got
}
