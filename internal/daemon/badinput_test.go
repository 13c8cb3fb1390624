package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// alive checks that the daemon still runs and still does its work: a
// config change through the control queue is applied and OtherModule
// handles messages in order (nothing sent before the bad input is lost).
func alive(t *testing.T, env *mmtest.Env, d *mmtest.Proc, inc int) {
	t.Helper()
	if d.Exited() {
		t.Fatalf("the daemon exited; stderr:\n%s", tail(d.Stderr.String(), 3000))
	}
	env.Configure(otherModuleConfig(inc))
	mmtest.Eventually(t, wait, func() error {
		if got := probe(t, env, 1); got != int64(1+inc) {
			return fmt.Errorf("my_ct %d, want %d: config after the bad input not applied", got, 1+inc)
		}
		return nil
	})
}

// stderrHas waits until the daemon's stderr contains every one of want.
func stderrHas(t *testing.T, env *mmtest.Env, d *mmtest.Proc, want ...string) {
	t.Helper()
	mmtest.Eventually(t, wait, func() error {
		s := d.Stderr.String()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return fmt.Errorf("stderr does not say %q yet", w)
			}
		}
		return nil
	})
}

func control(items ...map[string]any) message.Message {
	list := make([]any, len(items))
	for i, it := range items {
		list[i] = it
	}
	return message.Message{".multimodule": map[string]any{"control": list}}
}

func config(cfg map[string]any) message.Message {
	return message.Message{".multimodule": map[string]any{"config": cfg}}
}

// TestBadControlMessages: every malformed control message is refused with
// an error naming what was wrong; the daemon goes on applying the next
// ones and loses nothing.
func TestBadControlMessages(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 0)
	cases := []struct {
		name string
		msg  message.Message
		want []string
	}{
		{"no .multimodule map", message.Message{"config": map[string]any{}}, []string{`a control message must have a \".multimodule\" map`}},
		{".multimodule a list", message.Message{".multimodule": []any{1}}, []string{`\".multimodule\" map`}},
		{"neither config nor control", message.Message{".multimodule": map[string]any{"other": 1}}, []string{"neither config nor control"}},
		{"config not a map", message.Message{".multimodule": map[string]any{"config": "x"}}, []string{".multimodule.config must be a map, got string"}},
		{"control not a list", message.Message{".multimodule": map[string]any{"control": map[string]any{"type": "cleanly_exit"}}}, []string{".multimodule.control must be a list"}},
		{"control item not a map", control(nil), []string{".multimodule.control[0] must be a map"}},
		{"unknown control type", control(map[string]any{"type": "reboot_the_world"}), []string{"unknown type reboot_the_world"}},
		{"failsafe without a task", control(map[string]any{"type": "failsafe"}), []string{".multimodule.control[0] failsafe"}},
		{"unfailsafe a path", control(map[string]any{"type": "unfailsafe", "task": "../../etc/passwd"}), []string{".multimodule.control[0] unfailsafe"}},
		{"task config not a map", config(map[string]any{"OtherModule": "fast"}), []string{"OtherModule"}},
		{"Router routes not a list", config(map[string]any{"Router": map[string]any{"routes": "everything"}}), []string{"router config"}},
		{"Router bad regex", config(map[string]any{"Router": map[string]any{"routes": []any{map[string]any{"match": map[string]any{"a": " special/(/"}}}}}), []string{"router config"}},
		{"is_external on a stateless task", config(map[string]any{"Incrementer": map[string]any{"is_external": true}}), []string{"only stateful tasks may run external"}},
		{"intervals not a map", config(map[string]any{"Example1": map[string]any{"intervals": "often"}}), []string{"intervals must be a map"}},
		{"interval not a number", config(map[string]any{"Example1": map[string]any{"intervals": map[string]any{"save_state": "soon"}}}), []string{"intervals.save_state must be a number"}},
		{"max_crash_redeliveries negative", config(map[string]any{"Example1": map[string]any{"max_crash_redeliveries": -1}}), []string{"max_crash_redeliveries must be a whole number ≥ 0, got -1"}},
		{"max_crash_redeliveries not a number", config(map[string]any{"Example1": map[string]any{"max_crash_redeliveries": "twice"}}), []string{"max_crash_redeliveries must be a whole number ≥ 0, got twice"}},
		{"max_crash_redeliveries fractional", config(map[string]any{"Example1": map[string]any{"max_crash_redeliveries": 1.5}}), []string{"max_crash_redeliveries must be a whole number"}},
		{"is_external a map", config(map[string]any{"OtherModule": map[string]any{"is_external": map[string]any{}}}), []string{"is_external must be true or false"}},
		{"MultiModule windows not a map", config(map[string]any{"MultiModule": map[string]any{"windows": 5}}), []string{"windows must be a map"}},
		{"OutOfBand config wrong type", config(map[string]any{"OutOfBand": map[string]any{"channels": 5}}), []string{"OutOfBand"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env.Send("MultiModule_control", c.msg)
			stderrHas(t, env, d, c.want...)
			alive(t, env, d, 10+i)
		})
	}
	// The router config that was refused did not replace the working one.
	env.Configure(otherModuleConfig(1))
	env.Eventually(wait, func() error {
		if got := probe(t, env, 5); got != 6 {
			return fmt.Errorf("my_ct %d, want 6", got)
		}
		return nil
	})
}

// TestBadConfigFiles: a config file that does not parse, or holds the
// wrong shape, is reported with the file (and line); the running config
// stays.
func TestBadConfigFiles(t *testing.T) {
	env := mmtest.NewEnv(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(text string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("OtherModule: {increment_by: 1}\nRouter:\n  routes:\n    - match: {source: OtherModule}\n      forwards: [{qname: test_out}]\n")
	d := env.StartDaemon("-p", "MultiModuleTest", "-c", path)
	if got := probe(t, env, 1); got != 2 {
		t.Fatalf("my_ct %d, want 2", got)
	}
	cases := []struct {
		name, text string
		want       []string
	}{
		{"malformed JSON", `{"OtherModule": {"increment_by": 5,}`, []string{path}},
		{"malformed YAML", "OtherModule:\n  increment_by: [5\n", []string{path, "line"}},
		{"a list, not a map", "- OtherModule\n- Router\n", []string{path}},
		{"a scalar", "42\n", []string{path}},
		{"task config a list", "OtherModule: [1, 2]\n", []string{"OtherModule"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(d.Stderr.String())
			write(c.text)
			mmtest.Eventually(t, wait, func() error {
				s := d.Stderr.String()[before:]
				for _, w := range c.want {
					if !strings.Contains(s, w) {
						return fmt.Errorf("no error naming %q yet; stderr since the write:\n%s", w, tail(s, 2000))
					}
				}
				return nil
			})
			if got := probe(t, env, 1); got != 2 {
				t.Fatalf("after a bad config file my_ct %d, want 2 (the running config stays)", got)
			}
		})
	}
}

// TestHugeAndDeepMessages: 8 MiB works end to end through the daemon;
// larger is refused at the sender with a clear error; a message nested
// up to 512 levels is carried, deeper is refused at the sender.
func TestHugeAndDeepMessages(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 0)

	t.Run("8 MiB through the daemon", func(t *testing.T) {
		// Room for the fields OtherModule and the transport add.
		big := strings.Repeat("x", transit.MaxMessageBytes-4096)
		env.Send("OtherModule", message.Message{"ct": 7, "big": big})
		out := env.Recv("test_out", wait)
		if s, _ := out["big"].(string); len(s) != len(big) {
			t.Fatalf("got a %d-byte string, want %d", len(s), len(big))
		}
		if my, _ := message.Int(out["my_ct"]); my != 8 {
			t.Fatalf("my_ct %d, want 8", my)
		}
	})
	t.Run("larger refused at the sender", func(t *testing.T) {
		big := strings.Repeat("x", transit.MaxMessageBytes+1)
		err := env.Client().Send(t.Context(), "OtherModule", message.Message{"big": big}, transit.SendOptions{})
		if !errors.Is(err, transit.ErrTooLarge) || !strings.Contains(err.Error(), "OtherModule") {
			t.Fatalf("got %v, want ErrTooLarge naming the queue", err)
		}
	})
	t.Run("larger refused by the send command", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "big.json")
		if err := os.WriteFile(file, []byte(`{"big": "`+strings.Repeat("x", transit.MaxMessageBytes)+`"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := env.Command("send", "OtherModule", "-")
		cmd.Stdin = f
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "too large") {
			t.Fatalf("send of a 8 MiB+ message: got %v, output %q; want a failure saying it is too large", err, out)
		}
	})
	// message.Normalize refuses nesting deeper than 512 levels at the
	// sender; anything up to that is carried.
	for _, depth := range []int{100, 500, 5000, 100000} {
		t.Run(fmt.Sprintf("nested %d deep", depth), func(t *testing.T) {
			var v any = "leaf"
			for range depth {
				v = map[string]any{"n": v}
			}
			err := env.Client().Send(t.Context(), "OtherModule", message.Message{"ct": depth, "deep": v}, transit.SendOptions{})
			if depth > 512 {
				if err == nil || !strings.Contains(err.Error(), "nested deeper than 512 levels") || !strings.Contains(err.Error(), `"OtherModule"`) {
					t.Fatalf("got %.200v, want a refusal naming the queue and the nesting limit", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			out := env.Recv("test_out", wait)
			if ct, _ := message.Int(out["ct"]); ct != int64(depth) {
				t.Fatalf("got ct %v, want %d", out["ct"], depth)
			}
		})
	}
	alive(t, env, d, 3)
}

// TestCorruptFilesAtStart: torn or corrupt conf/state/status files are
// moved aside as .corrupt and reported; a task with corrupt state starts
// from empty state with an alert; the daemon runs.
func TestCorruptFilesAtStart(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	waitRouting(t, env)
	for i := range 5 {
		probe(t, env, i)
	}
	env.Eventually(wait, func() error {
		if n := messageCount(t, env); n != 5 {
			return fmt.Errorf("saved message_ct %d, want 5", n)
		}
		return nil
	})
	d.Kill()
	files := map[string]string{
		"OtherModule.state":  `{"message_ct": 5, "trunc`,
		"Router.conf":        "\x00\x01garbage",
		"OtherModule.status": `[1, 2`,
	}
	for f, text := range files {
		if err := os.WriteFile(filepath.Join(env.StateDir, f), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d = env.StartDaemon("-p", "MultiModuleTest")
	// The Router's config was lost with its file: send it again, and
	// wait until it is in force. (A message OtherModule emits before that
	// loads the Router configured empty, which routes nothing.)
	env.Configure(otherModuleConfig(1))
	waitRouting(t, env)
	if got := probe(t, env, 1); got != 2 {
		t.Fatalf("my_ct %d, want 2", got)
	}
	stderrHas(t, env, d, "corrupt file", "OtherModule.state", "saved state unusable, starting from empty state", "Router.conf")
	for f := range files {
		if f == "OtherModule.status" {
			continue // read by the supervisor only for externals
		}
		if _, err := os.Stat(filepath.Join(env.StateDir, f+".corrupt")); err != nil {
			t.Errorf("%s was not moved aside: %v", f, err)
		}
	}
	env.Eventually(wait, func() error {
		if n := messageCount(t, env); n != 1 {
			return fmt.Errorf("saved message_ct %d, want 1 (a fresh state, one message)", n)
		}
		return nil
	})
}

// waitRouting waits until the Router routes OtherModule's messages to
// test_out. A config sent to the control queue is applied after Configure
// returned, and a Router loaded before that (because a message waits for
// it) is configured with an empty map and routes nothing: a probe's
// output would be dropped. The messages it sends to the Router directly
// are all read from test_out before it returns.
func waitRouting(t *testing.T, env *mmtest.Env) {
	t.Helper()
	sent, got := int64(0), int64(-1)
	env.Eventually(wait, func() error {
		env.Send("Router", message.Message{"source": "OtherModule", "routing_probe": sent})
		sent++
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		m, err := env.Client().Receive(ctx, "test_out")
		if err != nil {
			return fmt.Errorf("the Router does not route to test_out yet: %w", err)
		}
		n, ok := message.Int(m["routing_probe"])
		if !ok {
			t.Fatalf("test_out: got %v, want the Router's routing probes only", m)
		}
		got = n
		return nil
	})
	// From the first one routed on, every later one comes out, in order.
	for got != sent-1 {
		m := env.Recv("test_out", wait)
		n, ok := message.Int(m["routing_probe"])
		if !ok {
			t.Fatalf("test_out: got %v, want the Router's routing probes only", m)
		}
		got = n
	}
}
