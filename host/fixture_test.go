package host_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	_ "github.com/multimodule/multimodule/tasks" // the built-in tasks (the Router)
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// recorder collects what test tasks see, safely across goroutines.
type recorder struct {
	mu      sync.Mutex
	msgs    map[string][]message.Message
	configs map[string]int
	recurs  map[string]int
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{msgs: map[string][]message.Message{}, configs: map[string]int{}, recurs: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) add(f func()) {
	r.mu.Lock()
	f()
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) messages(name string) []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message.Message(nil), r.msgs[name]...)
}

// probe is a configurable test task.
type probe struct {
	rec  *recorder
	name string
}

func (p *probe) SetConfig(tc *task.Context, cfg map[string]any) error {
	if message.Truthy(cfg["reject"]) {
		return errors.New("rejected by test")
	}
	p.rec.add(func() { p.rec.configs[p.name]++ })
	if iv, ok := message.Float(cfg["recur_ms"]); ok {
		tc.NamedRecur("tick", time.Duration(iv)*time.Millisecond, func(tc *task.Context) {
			p.rec.add(func() { p.rec.recurs[p.name]++ })
		})
	}
	return nil
}

func (p *probe) Message(tc *task.Context, msg message.Message) error {
	if message.Truthy(msg["panic"]) {
		panic("test panic")
	}
	if message.Truthy(msg["fail"]) {
		return errors.New("test failure")
	}
	if ms, ok := message.Float(msg["sleep_ms"]); ok {
		time.Sleep(time.Duration(ms * float64(time.Millisecond))) // a handler that takes this long
	}
	if msg["emit"] != nil {
		return tc.Emit(message.Message{"payload": msg["emit"]})
	}
	if dest, ok := msg["send_to"].(string); ok {
		// Sends the message it handles on to Sink at host dest, and
		// fails with the send.
		return tc.SendTo("Sink", dest, msg)
	}
	if msg["pass_on"] != nil {
		if p.name != "Probe" {
			msg["changed_by"] = p.name // the new owner changes it
		} else if err := tc.Emit(msg); err != nil {
			return err
		} else {
			return errors.New("failed after passing the message on")
		}
	}
	if msg["count"] != nil {
		n, _ := message.Int(tc.State()["n"])
		tc.State()["n"] = n + 1
	}
	p.rec.add(func() { p.rec.msgs[p.name] = append(p.rec.msgs[p.name], msg) })
	return nil
}

// inlineProbe is a probe that is a task.Inliner.
type inlineProbe struct{ probe }

func (*inlineProbe) HandlesInline() bool { return true }

var _ task.Inliner = (*inlineProbe)(nil)

func testRegistry(rec *recorder) *registry.Registry {
	reg := registry.New()
	for _, name := range []string{"Probe", "Sink"} {
		reg.MustRegister(task.Definition{Namespace: "T", Name: name, New: func() (task.Task, error) { return &probe{rec: rec, name: name}, nil }})
	}
	for _, name := range []string{"Emitter1", "Emitter2"} {
		reg.MustRegister(task.Definition{Namespace: "T", Name: name, New: func() (task.Task, error) { return &emitter{rec: rec, name: name}, nil }})
	}
	reg.MustRegister(task.Definition{Namespace: "T", Name: "InlineSink", New: func() (task.Task, error) {
		return &inlineProbe{probe{rec: rec, name: "InlineSink"}}, nil
	}})
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Keeper", Stateful: true, New: func() (task.Task, error) { return &probe{rec: rec, name: "Keeper"}, nil }})
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Broken", New: func() (task.Task, error) { return nil, errors.New("cannot build") }})
	return reg
}

type fixture struct {
	env   *mmtest.Env
	h     *host.Host
	rec   *recorder
	st    *store.Store
	stop  context.CancelFunc
	done  chan struct{}
	outMu sync.Mutex
	out   []string
}

func newFixture(t *testing.T, rec *recorder, env *mmtest.Env) *fixture {
	t.Helper()
	return newFixtureScanning(t, rec, env, 20*time.Millisecond)
}

// newFixtureScanning is newFixture with the given host.Options.ScanInterval.
func newFixtureScanning(t *testing.T, rec *recorder, env *mmtest.Env, scan time.Duration) *fixture {
	t.Helper()
	if env == nil {
		env = mmtest.NewEnv(t)
	}
	f := &fixture{env: env, rec: rec, st: env.Store(), done: make(chan struct{})}
	reg := testRegistry(rec)
	h, err := host.New(host.Options{
		Transit:      env.Client(),
		Store:        f.st,
		Sources:      registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
		SaveInterval: 20 * time.Millisecond,
		ScanInterval: scan,
		Out: func(ch, tk, text string, d map[string]any) {
			f.outMu.Lock()
			line := ch + " " + tk + " " + text
			if m, ok := d["message"]; ok {
				line += " message=" + fmt.Sprint(m)
			}
			f.out = append(f.out, line)
			f.outMu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go func() { defer close(f.done); _ = h.Run(ctx) }()
	t.Cleanup(f.shutdown)
	return f
}

func (f *fixture) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = f.h.Shutdown(ctx)
	f.stop()
	<-f.done
}

func (f *fixture) outputs() []string {
	f.outMu.Lock()
	defer f.outMu.Unlock()
	return append([]string(nil), f.out...)
}

func (f *fixture) waitMsgs(t *testing.T, name string, n int) []message.Message {
	t.Helper()
	var got []message.Message
	mmtest.Eventually(t, 10*time.Second, func() error {
		got = f.rec.messages(name)
		if len(got) < n {
			return fmt.Errorf("%s has %d messages, want %d", name, len(got), n)
		}
		return nil
	})
	return got
}
