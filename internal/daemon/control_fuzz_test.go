package daemon_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// FuzzControlMessage sends arbitrary control messages to a real daemon's
// control queue and checks, after each, that the daemon is still running
// and still applies control messages in order: a probe reconfigures the
// Router and a message must come out through the new route.
//
// Inputs are sanitized of what would leave the test's sandbox or end the
// run rather than exercise parsing: cleanly_exit (tested in
// TestCleanlyExitLosesNothing and TestBadControlMessages), is_external
// set true (starts processes), and config for the OutOfBand and
// MultiModule tasks (write files, failsafe tasks; tested in their own
// tests).
func FuzzControlMessage(f *testing.F) {
	for _, s := range []string{
		`{".multimodule": {"config": {"Router": {"routes": []}}}}`,
		`{".multimodule": {"config": {"Foo": {"x": 1}, "Bar": null}}}`,
		`{".multimodule": {"config": "nope"}}`,
		`{".multimodule": {"config": {"Router": {"routes": "nope"}}}}`,
		`{".multimodule": {"config": {"Router": {"routes": [{"match": {"a": "/(/"}}]}}}}`,
		`{".multimodule": {"config": {"Router": {"intervals": {"save_state": -1}}}}}`,
		`{".multimodule": {"config": {"Router": {"is_external": [1]}}}}`,
		`{".multimodule": {"control": [{"type": "failsafe", "task": "Foo", "reason": 3}]}}`,
		`{".multimodule": {"control": [{"type": "unfailsafe", "task": "../etc"}]}}`,
		`{".multimodule": {"control": [{"type": "nope"}, 7, null]}}`,
		`{".multimodule": {"control": {"type": "cleanly_exit"}}}`,
		`{".multimodule": []}`,
		`{".multimodule": {}}`,
		`{"x": 1}`,
	} {
		f.Add([]byte(s))
	}
	env := mmtest.NewEnv(f)
	env.StartDaemon()
	probe := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := message.Unmarshal(data)
		if err != nil {
			return // not a message: refused at the sender (FuzzUnmarshal)
		}
		sanitize(m)
		env.T = t
		env.Send("MultiModule_control", m)
		probe++
		route := map[string]any{"routes": []any{map[string]any{
			"match":    map[string]any{"probe": probe},
			"forwards": []any{map[string]any{"qname": "fuzz_probe"}},
		}}}
		env.Send("MultiModule_control", message.Message{".multimodule": map[string]any{
			"control": []any{map[string]any{"type": "unfailsafe", "task": "Router"}},
			"config":  map[string]any{"Router": route},
		}})
		// The control queue and the Router's queue are separate: resend
		// the probe until the new route is in place (earlier probes may
		// still come out; they are skipped).
		deadline := time.Now().Add(30 * time.Second)
		for {
			env.Send("Router", message.Message{"probe": probe})
			ctx, cancel := context.WithTimeout(t.Context(), 25*time.Millisecond)
			got, err := env.Client().Receive(ctx, "fuzz_probe")
			cancel()
			if n, _ := message.Int(got["probe"]); err == nil && n == int64(probe) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after control message %s the daemon no longer applies control messages: no probe %d within 30s (last: %v, %v)", data, probe, got, err)
			}
		}
	})
}

// sanitize removes from a control message what FuzzControlMessage must
// not do (see its doc).
func sanitize(m message.Message) {
	mm, ok := m[".multimodule"].(map[string]any)
	if !ok {
		return
	}
	if cfg, ok := mm["config"].(map[string]any); ok {
		delete(cfg, "OutOfBand")
		delete(cfg, "MultiModule")
		for _, v := range cfg {
			if c, ok := v.(map[string]any); ok && message.Truthy(c["is_external"]) {
				delete(c, "is_external")
			}
		}
	}
	if list, ok := mm["control"].([]any); ok {
		kept := list[:0]
		for _, item := range list {
			if c, ok := item.(map[string]any); ok && fmt.Sprint(c["type"]) == "cleanly_exit" {
				continue
			}
			kept = append(kept, item)
		}
		mm["control"] = kept
	}
}
