package host_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// Only a config its task accepted is saved: a rejected one leaves the
// saved file with the config the task runs with.
func TestRejectedConfigNotSaved(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	wantRejected(t, f.h.Configure("Probe", map[string]any{"v": 2, "reject": true}))
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
	wantRejected(t, f.h.RestoreConfigs())
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

// gatedTask is built only once its gate is open (a slow load, like an
// exec task in its handshake) and rejects {"reject": true}.
type gatedTask struct{}

func (gatedTask) SetConfig(_ *task.Context, cfg map[string]any) error {
	if message.Truthy(cfg["reject"]) {
		return errors.New("rejected by test")
	}
	return nil
}

func (gatedTask) Message(*task.Context, message.Message) error { return nil }

// A task still loading holds up no ConfigureAll: its config is saved
// before the task could say whether it takes it, and if the task then
// rejects it, the file gets back what it held before.
func TestConfigRejectedAfterSlowLoadPutBack(t *testing.T) {
	env := mmtest.NewEnv(t)
	st := env.Store()
	if err := st.SaveConfig("Gated", map[string]any{"v": int64(1)}); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Gated", New: func() (task.Task, error) {
		<-gate
		return gatedTask{}, nil
	}})
	var outMu sync.Mutex
	var outs []string
	h, _ := runHost(t, host.Options{
		Transit: env.Client(),
		Store:   st,
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
		Out: func(ch, tk, text string, d map[string]any) {
			outMu.Lock()
			outs = append(outs, ch+" "+tk+" "+text)
			outMu.Unlock()
		},
	})
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	done := make(chan error, 1)
	go func() { done <- h.Configure("Gated", map[string]any{"v": int64(2), "reject": true}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Configure waits for a task that is still loading")
	}
	close(gate)
	mmtest.Eventually(t, 10*time.Second, func() error {
		cfg, err := st.LoadConfig("Gated")
		if err != nil {
			return err
		}
		if v, _ := message.Int(cfg["v"]); v != 1 || cfg["reject"] != nil {
			return fmt.Errorf("saved config %v, want the one it held before ({v: 1})", cfg)
		}
		outMu.Lock()
		defer outMu.Unlock()
		for _, o := range outs {
			if strings.HasPrefix(o, "alert Gated") && strings.Contains(o, "config rejected") {
				return nil
			}
		}
		return fmt.Errorf("no alert about the rejected config: %v", outs)
	})
}

// wantRejected fails t unless err says that a task rejected its config
// (a ConfigError whose config was not kept).
func wantRejected(t *testing.T, err error) {
	t.Helper()
	var ce *host.ConfigError
	if !errors.As(err, &ce) || ce.Kept {
		t.Fatalf("got error %v, want a ConfigError for a rejected config (not kept)", err)
	}
}
