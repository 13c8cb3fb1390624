package routertask_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/multimodule/multimodule/examples/testtasks" // the MultiModuleTest namespace
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// wait is generous: the machine running the tests may be loaded.
const wait = 60 * time.Second

// deadLetter waits for the next dead letter and returns it with its
// reason.
func deadLetter(t *testing.T, env *mmtest.Env) (message.Message, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	m, err := env.Client().Receive(ctx, transit.DeadLetterQueue)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	dl, _ := m.Meta()["dead_letter"].(map[string]any)
	reason, _ := dl["reason"].(string)
	if dl == nil || reason == "" || dl["queue"] != "Router" {
		t.Fatalf("dead letter without the Router's reason: %v", m)
	}
	return m, reason
}

// peakRSS is the daemon's peak resident memory in bytes (VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the daemon's status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestDaemonRefusesLoopsControlDataAndExpensiveTransforms runs a daemon
// with a pass-through task (Incrementer: adds 1 to i and emits the message
// it got) and sends it the messages that used to loop forever, reconfigure
// the daemon, patch a task's state, or exhaust memory or time through a
// transform. Each is dead-lettered by the Router with its reason; the
// daemon keeps running and its config and state are untouched.
func TestDaemonRefusesLoopsControlDataAndExpensiveTransforms(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest", "-o", "alert:test_alerts,error:test_errors")
	env.Configure(map[string]any{
		"Router": map[string]any{"routes": []any{
			// The loop: Incrementer's output goes back to Incrementer.
			map[string]any{"match": map[string]any{"source": "Incrementer", "loop": true},
				"forwards": []any{map[string]any{"qname": "Incrementer"}}},
			map[string]any{"match": map[string]any{"source": "OtherModule"},
				"forwards": []any{map[string]any{"qname": "test_out"}}},
		}},
		"OtherModule": map[string]any{"increment_by": 1},
	})
	// The Router routes once OtherModule's output reaches test_out.
	env.Eventually(wait, func() error {
		env.Send("OtherModule", message.Message{"ct": 1})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := env.Client().Receive(ctx, "test_out"); err != nil {
			return fmt.Errorf("not routing yet: %w", err)
		}
		return nil
	})

	t.Run("routing loop", func(t *testing.T) {
		env.Send("Incrementer", message.Message{"loop": true, "i": 0})
		m, reason := deadLetter(t, env)
		if !strings.HasPrefix(reason, "routing loop") {
			t.Fatalf("reason %q, want a routing loop", reason)
		}
		// 32 passes through the Router, each followed by one Incrementer.
		if i, _ := message.Int(m["i"]); i != 33 {
			t.Errorf("the dead letter has i=%d, want 33 (32 passes)", i)
		}
		dl := m.Meta()["dead_letter"].(map[string]any)
		if n, _ := message.Int(dl["passes"]); n != 32 {
			t.Errorf("dead_letter.passes: got %v, want 32", dl["passes"])
		}
		if _, ok := m.Meta()["router_passes"]; ok {
			t.Errorf("the dead letter still counts passes (%v): sent back, it would be refused at once", m.Meta())
		}
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		for {
			rec, err := env.Client().Receive(ctx, "test_alerts")
			if err != nil {
				t.Fatalf("no routing loop alert: %v", err)
			}
			if text, _ := rec["text"].(string); strings.Contains(text, "routing loop") {
				break
			}
		}
	})

	t.Run("control data", func(t *testing.T) {
		attacks := []message.Message{
			// A config for the control queue, passed on by Incrementer.
			{"static_forwards": []any{[]any{map[string]any{"forward": map[string]any{"qname": "MultiModule_control"}}}},
				".multimodule": map[string]any{"config": map[string]any{"OtherModule": map[string]any{"is_external": true, "increment_by": 1000}}}},
			// The same through a transform of the itinerary.
			{"static_forwards": []any{[]any{map[string]any{
				"forward":   map[string]any{"qname": "MultiModule_control"},
				"transform": map[string]any{".multimodule": map[string]any{"config": map[string]any{"OtherModule": map[string]any{"is_external": true, "increment_by": 1000}}}},
			}}}},
			// A state patch for OtherModule, added after Incrementer.
			{"static_forwards": []any{[]any{map[string]any{
				"forward":   map[string]any{"qname": "OtherModule"},
				"transform": map[string]any{".multimodule": map[string]any{"transform": map[string]any{"message_ct": 999}}},
			}}}},
		}
		for i, a := range attacks {
			env.Send("Incrementer", a)
			_, reason := deadLetter(t, env)
			if !strings.Contains(reason, "allow_control") {
				t.Errorf("attack %d: reason %q, want the control data refusal", i, reason)
			}
		}
		// The Router has handled the attacks (dead-lettered them): a config
		// sent now is applied after anything they could have sent to the
		// control queue.
		env.Configure(map[string]any{"Example2": map[string]any{"marker": 1}})
		env.Eventually(wait, func() error {
			c, err := env.Store().LoadConfig("Example2")
			if err != nil || c["marker"] == nil {
				return fmt.Errorf("marker config not applied yet (%v)", err)
			}
			return nil
		})
		c, err := env.Store().LoadConfig("OtherModule")
		if err != nil {
			t.Fatal(err)
		}
		if c["is_external"] != nil || c["increment_by"] != int64(1) {
			t.Errorf("OtherModule's config: got %v, want the attack not applied", c)
		}
		// OtherModule's state counts its messages; the patch would have set
		// 999. A probe after the attacks is handled after any patch.
		env.Send("OtherModule", message.Message{"ct": 1})
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		out, err := env.Client().Receive(ctx, "test_out")
		if err != nil {
			t.Fatalf("no output from OtherModule: %v", err)
		}
		env.Eventually(wait, func() error {
			st, err := env.Store().LoadState("OtherModule")
			if err != nil {
				return err
			}
			n, _ := message.Int(st["message_ct"])
			if n >= 999 {
				t.Fatalf("OtherModule's state was patched: %v", st)
			}
			if n < 2 {
				return fmt.Errorf("state not saved yet: %v (output %v)", st, out)
			}
			return nil
		})
	})

	t.Run("transform over its limits", func(t *testing.T) {
		a1000 := strings.Repeat("a", 1000)
		keys := func(n int) map[string]any {
			tr := map[string]any{}
			for i := range n {
				tr[fmt.Sprintf("k%03d", i)] = ` specials/repeat("` + a1000 + `", 30000)`
			}
			return tr
		}
		hop := func(tr map[string]any) []any {
			return []any{[]any{map[string]any{"forward": map[string]any{"qname": "test_out"}, "transform": tr}}}
		}
		for _, tt := range []struct {
			name string
			msg  message.Message
			want string
		}{
			{"100 keys building 30 MB each", message.Message{"static_forwards": hop(keys(100))}, "at most 32"},
			{"32 keys building 30 MB each", message.Message{"static_forwards": hop(keys(32))}, "byte budget exceeded"},
			{"a large pattern on a long string", message.Message{"s": strings.Repeat("a", 1<<20),
				"static_forwards": hop(map[string]any{"m": ` specials/message.s matches "[a-q][^u-z]{500}x"`})}, "cost budget exceeded"},
		} {
			start := time.Now()
			env.Send("Incrementer", tt.msg)
			m, reason := deadLetter(t, env)
			if !strings.Contains(reason, tt.want) {
				t.Errorf("%s: reason %q, want it to contain %q", tt.name, reason, tt.want)
			}
			if _, ok := m["static_forwards"]; !ok {
				t.Errorf("%s: the dead letter lost its itinerary: %.200v", tt.name, m)
			}
			t.Logf("%s: dead-lettered after %v", tt.name, time.Since(start))
		}
		if d.Exited() {
			t.Fatalf("the daemon died: %s", d.Stderr)
		}
		if rss := peakRSS(t, d.PID()); rss > 1<<30 {
			t.Errorf("the daemon's peak memory is %d MB, want it bounded by the budgets", rss>>20)
		}
	})
}
