package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/multimodule/multimodule/examples/testtasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

const wait = 30 * time.Second

func tutorialPath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../examples/tutorial.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var lineRE = regexp.MustCompile(`Example2: received a message: (\d+) \(howdy\)`)

// cts returns the counts Example2 printed, in order.
func cts(out string) []int {
	var got []int
	for _, m := range lineRE.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		got = append(got, n)
	}
	return got
}

// TestTutorial runs the tutorial exactly: a line per second; Ctrl-C and start
// again: the count continues; {new_ct: 999} makes it jump.
func TestTutorial(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest", "-c", tutorialPath(t))
	d.WaitOutput(t, `received a message: 2 \(howdy\)`, wait)
	if err := d.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code after Ctrl-C: got %d, want 0; stderr:\n%s", code, d.Stderr)
	}
	first := cts(d.Stdout.String())
	for i, n := range first {
		if n != i {
			t.Fatalf("first run printed %v, want 0, 1, 2, … in order", first)
		}
	}
	last := first[len(first)-1]

	d2 := env.StartDaemon("-p", "MultiModuleTest", "-c", tutorialPath(t))
	d2.WaitOutput(t, `received a message: \d+ \(howdy\)`, wait)
	if got := cts(d2.Stdout.String())[0]; got != last+1 {
		t.Fatalf("after restart the count went on at %d, want %d (where it stopped)", got, last+1)
	}
	env.Send("Example1", message.Message{"new_ct": 999})
	d2.WaitOutput(t, `received a message: 1000 \(howdy\)`, wait)
	after := cts(d2.Stdout.String())
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 && after[i] != 999 {
			t.Fatalf("count sequence %v: only the jump to 999 may break it", after)
		}
	}
}

func otherModuleConfig(inc int) map[string]any {
	return map[string]any{
		"OtherModule": map[string]any{"increment_by": inc},
		"Router": map[string]any{"routes": []any{map[string]any{
			"match":    map[string]any{"source": "OtherModule"},
			"forwards": []any{map[string]any{"qname": "test_out"}},
		}}},
	}
}

// probe sends ct and returns the resulting my_ct.
func probe(t *testing.T, env *mmtest.Env, ct int) int64 {
	t.Helper()
	env.Send("OtherModule", message.Message{"ct": ct})
	out := env.Recv("test_out", wait)
	n, ok := message.Int(out["my_ct"])
	if !ok {
		t.Fatalf("output without my_ct: %v", out)
	}
	return n
}

func TestConfigFromFileAndControlQueue(t *testing.T) {
	env := mmtest.NewEnv(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	write := func(text string) {
		t.Helper()
		// Replace the file the way editors do: write a temp, rename.
		tmp := cfgPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	yamlFor := func(inc int) string {
		return fmt.Sprintf("OtherModule:\n  increment_by: %d\nRouter:\n  routes:\n    - match: {source: OtherModule}\n      forwards: [{qname: test_out}]\n", inc)
	}
	write(yamlFor(1))
	d := env.StartDaemon("-p", "MultiModuleTest", "-c", cfgPath)
	if got := probe(t, env, 5); got != 6 {
		t.Fatalf("my_ct: got %d, want 6 (increment_by 1 from the file)", got)
	}

	write(yamlFor(10))
	env.Eventually(wait, func() error {
		if got := probe(t, env, 5); got != 15 {
			return fmt.Errorf("my_ct %d, want 15 after the file changed", got)
		}
		return nil
	})

	write("OtherModule:\n  increment_by: [oops\n")
	env.Eventually(wait, func() error {
		if !strings.Contains(d.Stderr.String(), "line 2") {
			return fmt.Errorf("no error naming the line in stderr yet")
		}
		return nil
	})
	if got := probe(t, env, 5); got != 15 {
		t.Fatalf("after a broken edit my_ct %d, want 15 (the running config stays)", got)
	}

	env.Configure(map[string]any{"OtherModule": map[string]any{"increment_by": 100}})
	env.Eventually(wait, func() error {
		if got := probe(t, env, 5); got != 105 {
			return fmt.Errorf("my_ct %d, want 105 after the control-queue config", got)
		}
		return nil
	})
	saved, err := env.Store().LoadConfig("OtherModule")
	if err != nil || saved["increment_by"] != int64(100) {
		t.Fatalf("saved config: got %v (%v), want increment_by 100", saved, err)
	}
}

func messageCount(t *testing.T, env *mmtest.Env) int64 {
	t.Helper()
	st, err := env.Store().LoadState("OtherModule")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := message.Int(st["message_ct"])
	return n
}

func TestStateSurvivesKillAndCleanExit(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	for i := range 20 {
		probe(t, env, i)
	}
	// Saved within a save interval (1 s)…
	env.Eventually(wait, func() error {
		if n := messageCount(t, env); n != 20 {
			return fmt.Errorf("saved message_ct %d, want 20", n)
		}
		return nil
	})
	// …so SIGKILL loses nothing that was saved.
	d.Kill()
	d = env.StartDaemon("-p", "MultiModuleTest")
	probe(t, env, 0)
	// An operator's state transform, then one more message.
	env.Send("OtherModule", message.Message{".multimodule": map[string]any{"transform": map[string]any{"message_ct": 1000}}})
	probe(t, env, 0)
	// A clean exit saves the latest state at once.
	env.Send("MultiModule_control", message.Message{".multimodule": map[string]any{"control": []any{map[string]any{"type": "cleanly_exit"}}}})
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("cleanly_exit: exit code %d, want 0; stderr:\n%s", code, d.Stderr)
	}
	if n := messageCount(t, env); n != 1001 {
		t.Fatalf("state after clean exit: message_ct %d, want 1001 (21 counted, transformed to 1000, one more)", n)
	}
}

func TestCleanlyExitLosesNothing(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, -1) // configured and flowing
	const n = 300
	for i := range n {
		env.Send("OtherModule", message.Message{"ct": i})
	}
	env.Send("MultiModule_control", message.Message{".multimodule": map[string]any{"control": []any{map[string]any{"type": "cleanly_exit"}}}})
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("cleanly_exit: exit code %d, want 0; stderr:\n%s", code, d.Stderr)
	}
	// Whatever the daemon did not take before exiting still waits on the
	// bus; a new daemon delivers it. Every message arrives once, in order.
	env.StartDaemon("-p", "MultiModuleTest")
	for i := range n {
		out := env.Recv("test_out", wait)
		if ct, _ := message.Int(out["ct"]); ct != int64(i) {
			t.Fatalf("output %d: ct %v, want %d", i, out["ct"], i)
		}
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	_, stderr, code := env.Run("-p", "MultiModuleTest")
	if code == 0 {
		t.Fatal("second daemon on the same state dir: exit code 0, want non-zero")
	}
	want := fmt.Sprintf("already running under %d", d.PID())
	if !strings.Contains(stderr, want) {
		t.Fatalf("second daemon's stderr %q does not say %q", stderr, want)
	}
}

func TestBadFlagsRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"-m main", []string{"-m", "main"}, "-m main is refused"},
		{"unknown namespace", []string{"-p", "NoSuchTasks"}, "no such task namespace"},
		{"bad control queue", []string{"-q", "bad name"}, "-q"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := env.Run(c.args...)
			if code == 0 || !strings.Contains(stderr, c.want) {
				t.Fatalf("got exit %d, stderr %q; want non-zero and %q", code, stderr, c.want)
			}
		})
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
