package host_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	_ "github.com/multimodule/multimodule/tasks"
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
	if msg["emit"] != nil {
		return tc.Emit(message.Message{"payload": msg["emit"]})
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

func TestConfigAppliedOnceByContent(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	cfg := map[string]any{"a": 1}
	if err := f.h.Configure("Probe", cfg); err != nil {
		t.Fatal(err)
	}
	// The same content again, as a different map: no second SetConfig.
	if err := f.h.Configure("Probe", map[string]any{"a": int64(1)}); err != nil {
		t.Fatal(err)
	}
	// A message is handled only after configuration; handling it proves
	// both configs were processed.
	if err := f.h.Send(context.Background(), "Probe", message.Message{"x": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Probe", 1)
	rec.mu.Lock()
	n := rec.configs["Probe"]
	rec.mu.Unlock()
	if n != 1 {
		t.Fatalf("SetConfig called %d times, want 1", n)
	}
	if err := f.h.Configure("Probe", map[string]any{"a": 2}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 5*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.configs["Probe"] != 2 {
			return fmt.Errorf("SetConfig called %d times, want 2 after a change", rec.configs["Probe"])
		}
		return nil
	})
	saved, err := f.st.LoadConfig("Probe")
	if err != nil || saved["a"] != int64(2) {
		t.Fatalf("saved config: got %v (%v), want a=2", saved, err)
	}
}

func TestHandlerFailureCountedAndNextMessageProcessed(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, m := range []message.Message{{"panic": 1}, {"fail": 1}, {"seq": 3}} {
		if err := f.h.Send(ctx, "Probe", m); err != nil {
			t.Fatal(err)
		}
	}
	got := f.waitMsgs(t, "Probe", 1)
	if got[0]["seq"] != int64(3) {
		t.Fatalf("got %v, want the message after the failures", got[0])
	}
	if n := f.h.Counters().Get("Probe", host.MetricTaskMessageFailure); n != 2 {
		t.Fatalf("task_message_failure: got %d, want 2", n)
	}
	errs := 0
	for _, o := range f.outputs() {
		if strings.HasPrefix(o, "error Probe ") {
			errs++
		}
	}
	if errs != 2 {
		t.Fatalf("error records for Probe: got %d, want 2 (%v)", errs, f.outputs())
	}
}

// TestFailedHandlerThatPassedItsMessageOn: a handler that emitted the
// message it got and then failed is reported without the message, which
// its new owner may be changing already (reading it would race).
func TestFailedHandlerThatPassedItsMessageOn(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.ConfigureAll(map[string]any{
		"Probe":  map[string]any{},
		"Router": map[string]any{"routes": []any{map[string]any{"match": map[string]any{"source": "Probe"}, "forwards": []any{map[string]any{"qname": "Sink"}}}}},
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, m := range []message.Message{{"pass_on": 1}, {"fail": 1}} {
		if err := f.h.Send(ctx, "Probe", m); err != nil {
			t.Fatal(err)
		}
	}
	got := f.waitMsgs(t, "Sink", 1)
	if got[0]["changed_by"] != "Sink" || got[0]["source"] != "Probe" {
		t.Errorf("Sink got %v, want the message passed on by Probe", got[0])
	}
	var lines []string
	mmtest.Eventually(t, 10*time.Second, func() error {
		lines = nil
		for _, o := range f.outputs() {
			if strings.HasPrefix(o, "error Probe task Probe: message handler failed") {
				lines = append(lines, o)
			}
		}
		if len(lines) < 2 {
			return fmt.Errorf("error records: got %q, want 2", lines)
		}
		return nil
	})
	if want := "message=(sent on by the handler, not shown)"; !strings.HasSuffix(lines[0], want) {
		t.Errorf("record of the failure after passing on: got %q, want it to end with %q", lines[0], want)
	}
	if want := `"fail":1`; !strings.Contains(lines[1], want) {
		t.Errorf("record of the plain failure: got %q, want it to contain %q", lines[1], want)
	}
}

func TestNamedRecurOncePerInterval(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	// Many config changes, each asking for the same named schedule.
	for i := range 20 {
		if err := f.h.Configure("Probe", map[string]any{"recur_ms": 40, "v": i}); err != nil {
			t.Fatal(err)
		}
	}
	// Count from here: the schedule may have run while the configs were
	// still being applied (each is saved to disk first; slow under load).
	rec.mu.Lock()
	before := rec.recurs["Probe"]
	rec.mu.Unlock()
	start := time.Now()
	mmtest.Eventually(t, 10*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.recurs["Probe"]-before < 5 {
			return fmt.Errorf("%d runs so far", rec.recurs["Probe"]-before)
		}
		return nil
	})
	rec.mu.Lock()
	runs := rec.recurs["Probe"] - before
	rec.mu.Unlock()
	// One schedule of 40 ms can run at most elapsed/40ms (+1) times; 20
	// duplicated schedules would run ~20 times as often.
	if max := int(time.Since(start)/(40*time.Millisecond)) + 2; runs > max {
		t.Fatalf("recurring work ran %d times in %v, want at most %d (one schedule)", runs, time.Since(start), max)
	}
}

func TestLazyLoadOnSendAndRouting(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.ConfigureAll(map[string]any{
		"Probe":  map[string]any{},
		"Router": map[string]any{"routes": []any{map[string]any{"match": map[string]any{"source": "Probe"}, "forwards": []any{map[string]any{"qname": "Sink"}}}}},
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := f.h.Send(context.Background(), "Probe", message.Message{"emit": int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := f.waitMsgs(t, "Sink", 50)
	for i, m := range got {
		if m["payload"] != int64(i) || m["source"] != "Probe" {
			t.Fatalf("message %d: got %v, want payload %d from Probe (in order)", i, m, i)
		}
	}
}

// TestNoBusScan: a host whose ScanInterval is negative (an external
// process) does not load a task because messages wait for it on the bus,
// and still retries a configured task whose load failed; the same
// messages get a scanning host to load the task.
func TestNoBusScan(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.Send("Sink", message.Message{"n": 1})
	rec := newRecorder()
	f := newFixtureScanning(t, rec, env, -1)
	if err := f.h.Configure("Broken", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	// A retry comes from the same once-a-second tick that scans.
	mmtest.Eventually(t, 20*time.Second, func() error {
		if n := f.h.Counters().Get("Broken", host.MetricTaskCompileFailureInternal); n < 2 {
			return fmt.Errorf("load attempts of Broken: %d, want a retry", n)
		}
		return nil
	})
	if f.h.Hosts("Sink") {
		t.Fatal("Sink was loaded by a host that does not scan the bus")
	}
	f.shutdown()
	g := newFixtureScanning(t, rec, env, 20*time.Millisecond)
	if got := g.waitMsgs(t, "Sink", 1); got[0]["n"] != int64(1) {
		t.Fatalf("Sink got %v, want the waiting message", got)
	}
}

func TestLoadFailureCountedAndReported(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	// The config is taken; the load fails on its own goroutine, counted
	// and reported.
	if err := f.h.Configure("Broken", map[string]any{}); err != nil {
		t.Fatalf("configure Broken: got %v, want the config taken", err)
	}
	mmtest.Eventually(t, 10*time.Second, func() error {
		if n := f.h.Counters().Get("Broken", host.MetricTaskCompileFailureInternal); n < 1 {
			return fmt.Errorf("task_compile_failure.internal: got %d, want at least 1", n)
		}
		if out := strings.Join(f.outputs(), "\n"); !strings.Contains(out, "task Broken failed to load (attempt 1, retrying): task Broken: construct: cannot build") {
			return fmt.Errorf("no load failure reported; records:\n%s", out)
		}
		return nil
	})
	// Reconcile waits for the load and returns its error.
	if err := f.h.Reconcile("Broken"); err == nil || !strings.Contains(err.Error(), "cannot build") {
		t.Fatalf("reconcile Broken: got %v, want the load error", err)
	}
	// The host keeps working for others.
	if err := f.h.Configure("Probe", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	_ = f.h.Send(context.Background(), "Probe", message.Message{"ok": 1})
	f.waitMsgs(t, "Probe", 1)
}

func TestStateSavedTransformedAndRestored(t *testing.T) {
	rec := newRecorder()
	env := mmtest.NewEnv(t)
	f := newFixture(t, rec, env)
	ctx := context.Background()
	if err := f.h.Configure("Keeper", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	// This test is about state, not about the hand-over from the bus
	// (TestShutdownDeliversWaitingMessages and the migration tests cover
	// that): start once the task takes sends in memory.
	mmtest.Eventually(t, 10*time.Second, func() error {
		if !f.h.Settled("Keeper") {
			return fmt.Errorf("Keeper still catching up with its bus queue")
		}
		return nil
	})
	for range 3 {
		_ = f.h.Send(ctx, "Keeper", message.Message{"count": 1})
	}
	_ = f.h.Send(ctx, "Keeper", message.Message{".multimodule": map[string]any{"transform": map[string]any{"n": 100, "patched": "yes"}}})
	_ = f.h.Send(ctx, "Keeper", message.Message{"count": 1})
	f.waitMsgs(t, "Keeper", 4)
	// The state transform was not delivered as a message.
	for _, m := range f.rec.messages("Keeper") {
		if _, ok := m[".multimodule"]; ok {
			t.Fatalf("state transform delivered to the task: %v", m)
		}
	}
	f.shutdown()
	st, err := f.st.LoadState("Keeper")
	if err != nil {
		t.Fatal(err)
	}
	if st["n"] != int64(101) || st["patched"] != "yes" {
		t.Fatalf("saved state: got %v, want n=101 patched=yes", st)
	}
	if _, ok := st[".multimodule"].(map[string]any)["save_ts"]; !ok {
		t.Fatalf("saved state has no .multimodule.save_ts: %v", st)
	}
	// A new host continues from the saved state.
	f2 := newFixture(t, rec, env)
	_ = f2.h.Send(ctx, "Keeper", message.Message{"count": 1})
	f2.waitMsgs(t, "Keeper", 5)
	f2.shutdown()
	st, _ = f2.st.LoadState("Keeper")
	if st["n"] != int64(102) {
		t.Fatalf("state after restart: got n=%v, want 102", st["n"])
	}
}

func TestShutdownDeliversWaitingMessages(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last, after every other clean-up
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if err := f.h.Send(context.Background(), "Probe", message.Message{"i": int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	f.shutdown()
	// What was in memory was delivered before the exit; what a newly
	// loaded task had not yet taken from the bus (it catches up with the
	// bus first) still waits there. Together: all 500, once, in order.
	got := rec.messages("Probe")
	for {
		m, err := f.env.Client().TryReceive(context.Background(), "Probe")
		if err != nil {
			break
		}
		got = append(got, m)
	}
	if len(got) != 500 {
		t.Fatalf("delivered or waiting: %d messages, want 500", len(got))
	}
	for i, m := range got {
		if m["i"] != int64(i) {
			t.Fatalf("message %d: got %v, want i=%d (in order)", i, m, i)
		}
	}
}

func TestRejectedConfigKeepsPrevious(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	wantRejected(t, f.h.Configure("Probe", map[string]any{"reject": true}))
	_ = f.h.Send(context.Background(), "Probe", message.Message{"x": 1})
	f.waitMsgs(t, "Probe", 1)
	// The config is applied on the task's goroutine, after Configure
	// returned; a message that came through the bus (the task catching up
	// with its queue) may be handled first.
	mmtest.Eventually(t, 10*time.Second, func() error {
		for _, o := range f.outputs() {
			if strings.HasPrefix(o, "error ") && strings.Contains(o, "keeping the previous one") {
				return nil
			}
		}
		return fmt.Errorf("no error record about the rejected config: %v", f.outputs())
	})
}

// RestoreConfigsOf applies the saved configs of the named tasks only (an
// external process follows the daemon's config changes this way): a task
// not named keeps the config it has, a name without a saved config is
// skipped.
func TestRestoreConfigsOf(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.ConfigureAll(map[string]any{
		"Probe": map[string]any{"v": "old"},
		"Sink":  map[string]any{"v": "old"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Probe", "Sink"} {
		if err := f.st.SaveConfig(name, map[string]any{"v": "new"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.h.RestoreConfigsOf([]string{"Probe", "Nobody"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"Probe": "new", "Sink": "old"} {
		cfg, ok := f.h.Config(name)
		if !ok || cfg["v"] != want {
			t.Errorf("%s: config %v, want v=%s", name, cfg, want)
		}
	}
	if _, ok := f.h.Config("Nobody"); ok {
		t.Error("Nobody, without a saved config, got one")
	}
}

// diskChecker records, at each message and each recurring run, whether
// the config it runs with ({"v": n}, n growing with each change) is saved
// in the state directory already: the saved file holds it or a later one.
type diskChecker struct {
	st      *store.Store
	bad     *[]string
	mu      *sync.Mutex
	handled *atomic.Int64
}

func (c *diskChecker) SetConfig(tc *task.Context, cfg map[string]any) error {
	tc.NamedRecur("check", time.Millisecond, func(tc *task.Context) { c.check(tc, "recurring work") })
	return nil
}

func (c *diskChecker) check(tc *task.Context, what string) {
	cfg := tc.Config()
	saved, err := c.st.LoadConfig(tc.Name())
	given, _ := message.Int(cfg["v"])
	onDisk, ok := message.Int(saved["v"])
	if err != nil || !ok || onDisk < given {
		c.mu.Lock()
		*c.bad = append(*c.bad, fmt.Sprintf("%s under %v, saved %v (%v)", what, cfg, saved, err))
		c.mu.Unlock()
	}
}

func (c *diskChecker) Message(tc *task.Context, _ message.Message) error {
	c.check(tc, "a message")
	c.handled.Add(1)
	return nil
}

// A task acts on a config — handles a message, runs its recurring work —
// only once the config is saved: what it does under a config is never
// ahead of the state directory. (It is given the config before, to say
// whether it accepts it: only an accepted config is saved.)
func TestRunningTaskConfiguredOnlyOnceSaved(t *testing.T) {
	env := mmtest.NewEnv(t)
	var mu sync.Mutex
	var bad []string
	var handled atomic.Int64
	st := env.Store()
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Checker", New: func() (task.Task, error) {
		return &diskChecker{st: st, bad: &bad, mu: &mu, handled: &handled}, nil
	}})
	h, _ := runHost(t, host.Options{
		Transit: env.Client(),
		Store:   st,
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
		Out:     func(ch, tk, text string, d map[string]any) {},
	})
	for i := range 30 {
		done := make(chan error, 1)
		go func() { done <- h.ConfigureAll(map[string]any{"Checker": map[string]any{"v": int64(i)}}) }()
		// Messages meet the change on its way.
		for range 5 {
			if err := h.Send(context.Background(), "Checker", message.Message{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mmtest.Eventually(t, 10*time.Second, func() error {
		if n := handled.Load(); n < 150 {
			return fmt.Errorf("%d of 150 messages handled", n)
		}
		return nil
	})
	mmtest.Eventually(t, 10*time.Second, func() error {
		if cfg, _ := h.Config("Checker"); cfg["v"] != int64(29) {
			return fmt.Errorf("config %v", cfg)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%d times the task acted under a config not saved yet, first: %s", len(bad), bad[0])
	}
}
