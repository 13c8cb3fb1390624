package host_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// Only a config its task accepted is saved: a rejected one leaves the
// saved file with the config the task runs with.
func TestRejectedConfigNotSaved(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Configure("Probe", map[string]any{"v": 2, "reject": true}); err != nil {
		t.Fatal(err)
	}
	saved, err := f.st.LoadConfig("Probe")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := message.Int(saved["v"]); v != 1 || saved["reject"] != nil {
		t.Fatalf("saved config %v, want the accepted one {v: 1}", saved)
	}
	if !f.hasOutput("error Probe", "keeping the previous one") {
		t.Fatalf("no error about the rejected config: %v", f.outputs())
	}
}

// A saved config that its task rejects at start (a restart after the
// task's code changed, say) leaves the task unconfigured, with an alert:
// its messages wait until a config it accepts comes, and then are
// delivered in order.
func TestSavedConfigRejectedAtStartWaits(t *testing.T) {
	rec := newRecorder()
	env := mmtest.NewEnv(t)
	if err := env.Store().SaveConfig("Probe", map[string]any{"reject": true}); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, rec, env)
	if err := f.h.RestoreConfigs(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := f.h.Send(context.Background(), "Probe", message.Message{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	mmtest.Eventually(t, 10*time.Second, func() error {
		if !f.hasOutput("alert Probe", "waits") {
			return fmt.Errorf("no alert about the task waiting for a config: %v", f.outputs())
		}
		return nil
	})
	if got := rec.messages("Probe"); len(got) != 0 {
		t.Fatalf("an unconfigured task got messages: %v", got)
	}
	if err := f.h.Configure("Probe", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Probe", 3)
	for i, m := range rec.messages("Probe") {
		if n, _ := message.Int(m["i"]); n != int64(i) {
			t.Fatalf("message %d: %v, want i=%d (in order)", i, m, i)
		}
	}
	saved, _ := f.st.LoadConfig("Probe")
	if v, _ := message.Int(saved["v"]); v != 1 {
		t.Fatalf("saved config %v, want {v: 1}", saved)
	}
}

func (f *fixture) hasOutput(prefix, text string) bool {
	for _, o := range f.outputs() {
		if strings.HasPrefix(o, prefix) && strings.Contains(o, text) {
			return true
		}
	}
	return false
}
