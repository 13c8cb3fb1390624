package host_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"go.uber.org/goleak"
)

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

// A handler whose send of the message it handles failed still owns the
// message (nobody got it): its failure is reported with the message, so
// that a forward to a host that has no queues loses nothing unseen.
func TestFailedSendKeepsTheMessageInTheReport(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.Configure("Probe", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Send(context.Background(), "Probe", message.Message{"send_to": "nosuchbox", "keep": "me"}); err != nil {
		t.Fatal(err)
	}
	var line string
	mmtest.Eventually(t, 10*time.Second, func() error {
		for _, o := range f.outputs() {
			if strings.HasPrefix(o, "error Probe task Probe: message handler failed") {
				line = o
				return nil
			}
		}
		return fmt.Errorf("no failure record yet: %q", f.outputs())
	})
	if !strings.Contains(line, "nosuchbox") || !strings.Contains(line, `"keep":"me"`) {
		t.Errorf("failure record: got %q, want the send's error (host nosuchbox) and the message (\"keep\":\"me\")", line)
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
	// The retry comes from the timer the failure armed, not from a scan.
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
