package host_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// emitter is a test task that emits: {"burst": n, "run": r} emits n
// messages {seq, run}; {"bad": true} emits a message that is not JSON and
// records the error Emit returned; {"nonlocal": true} emits a message
// forced through the bus to the Router.
type emitter struct {
	rec  *recorder
	name string
}

func (e *emitter) Message(tc *task.Context, msg message.Message) error {
	if n, ok := message.Int(msg["burst"]); ok {
		for i := range n {
			if err := tc.Emit(message.Message{"seq": i, "run": msg["run"]}); err != nil {
				return err
			}
		}
		return nil
	}
	if message.Truthy(msg["bad"]) {
		err := tc.Emit(message.Message{"v": make(chan int)})
		e.rec.add(func() { e.rec.msgs[e.name] = append(e.rec.msgs[e.name], message.Message{"err": fmt.Sprint(err)}) })
		return nil
	}
	if message.Truthy(msg["nonlocal"]) {
		return tc.Emit(message.Message{"seq": int64(-1), message.MetaKey: map[string]any{
			"overrides": map[string]any{"force_non_local": map[string]any{host.RouterName: true}}}})
	}
	return nil
}

func routeTo(source, qname string) map[string]any {
	return map[string]any{"match": map[string]any{"source": source}, "forwards": []any{map[string]any{"qname": qname}}}
}

// inlineFixture: Emitter1 and Emitter2 → Router → sink (Sink when
// empty), with the Router (and the sink, if it is an Inliner) allowed to
// handle inline however long its messages take.
func inlineFixture(t *testing.T, sink ...string) (*fixture, *recorder) {
	t.Helper()
	t.Cleanup(host.SetInlineCostMax(time.Hour))
	t.Cleanup(host.CountInlined())
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	to := "Sink"
	if len(sink) > 0 {
		to = sink[0]
	}
	if err := f.h.ConfigureAll(map[string]any{
		"Emitter1": map[string]any{},
		"Emitter2": map[string]any{},
		to:         map[string]any{},
		"Router":   map[string]any{"routes": []any{routeTo("Emitter1", to), routeTo("Emitter2", to)}},
	}); err != nil {
		t.Fatal(err)
	}
	return f, rec
}

// TestInlineRoutingKeepsOrderPerSender: two tasks emit at the same time,
// so the Router's messages are routed partly inline on the emitters'
// goroutines and partly from its mailbox (an emitter that finds messages
// waiting there handles them first); every message reaches the sink once,
// in order per sender. With a sink that is a task.Inliner the whole chain
// runs on the emitters' goroutines when it can.
func TestInlineRoutingKeepsOrderPerSender(t *testing.T) {
	for _, sink := range []string{"Sink", "InlineSink"} {
		t.Run(sink, func(t *testing.T) { testInlineOrder(t, sink) })
	}
}

func testInlineOrder(t *testing.T, sink string) {
	f, _ := inlineFixture(t, sink)
	ctx := context.Background()
	const runs, burst = 4, 1000
	for run := range runs {
		for _, e := range []string{"Emitter1", "Emitter2"} {
			if err := f.h.Send(ctx, e, message.Message{"burst": burst, "run": run}); err != nil {
				t.Fatal(err)
			}
		}
		if run == 0 {
			// A lone burst as well: the Router idle, the mailbox empty.
			f.waitMsgs(t, sink, 2*burst)
		}
	}
	got := f.waitMsgs(t, sink, 2*runs*burst)
	if len(got) != 2*runs*burst {
		t.Fatalf("%s got %d messages, want %d", sink, len(got), 2*runs*burst)
	}
	type pos struct{ run, seq int64 }
	next := map[string]pos{}
	for _, m := range got {
		src, _ := m["source"].(string)
		run, _ := message.Int(m["run"])
		seq, _ := message.Int(m["seq"])
		want := next[src]
		if run != want.run || seq != want.seq {
			t.Fatalf("from %s: got run %d seq %d, want run %d seq %d", src, run, seq, want.run, want.seq)
		}
		if _, ok := m.SendTS(); !ok {
			t.Fatalf("no send_ts in %v", m)
		}
		want.seq++
		if want.seq == burst {
			want = pos{run + 1, 0}
		}
		next[src] = want
	}
	inlined := []string{host.RouterName}
	if sink == "InlineSink" {
		inlined = append(inlined, sink)
	}
	for _, name := range inlined {
		if n := f.h.Inlined(name); n == 0 {
			t.Errorf("no message to %s was handled inline", name)
		} else {
			t.Logf("%d of %d messages to %s handled inline", n, 2*runs*burst, name)
		}
	}
	if n := f.h.Inlined("Sink"); n != 0 {
		t.Errorf("%d messages to Sink, not an Inliner, were handled inline", n)
	}
}

// TestInlineRoutingRefusesNonJSON: a message that is not JSON is refused
// with an error from Emit, also when the Router would route it inline,
// and nothing reaches the Router.
func TestInlineRoutingRefusesNonJSON(t *testing.T) {
	f, _ := inlineFixture(t)
	ctx := context.Background()
	// Make sure the Router is loaded and configured: one message through.
	if err := f.h.Send(ctx, "Emitter1", message.Message{"burst": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Sink", 1)
	passed := f.h.Counters().Get(host.RouterName, host.MetricPassedMessages)
	if err := f.h.Send(ctx, "Emitter1", message.Message{"bad": true}); err != nil {
		t.Fatal(err)
	}
	got := f.waitMsgs(t, "Emitter1", 1)
	if e, _ := got[0]["err"].(string); e == "<nil>" || !strings.Contains(e, "Router") {
		t.Errorf("Emit of a non-JSON message: got error %q, want one naming the queue", e)
	}
	if err := f.h.Send(ctx, "Emitter1", message.Message{"burst": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Sink", 2)
	if n := f.h.Counters().Get(host.RouterName, host.MetricPassedMessages) - passed; n != 1 {
		t.Errorf("the Router handled %d messages after the first, want 1 (not the refused one)", n)
	}
}

// TestInlineRoutingForceNonLocal: a message whose overrides send it
// through the bus is not routed inline; the Router gets it from its bus
// queue.
func TestInlineRoutingForceNonLocal(t *testing.T) {
	f, _ := inlineFixture(t)
	ctx := context.Background()
	if err := f.h.Send(ctx, "Emitter1", message.Message{"burst": 1}); err != nil {
		t.Fatal(err)
	}
	f.waitMsgs(t, "Sink", 1)
	before := f.h.Inlined(host.RouterName)
	if err := f.h.Send(ctx, "Emitter1", message.Message{"nonlocal": true}); err != nil {
		t.Fatal(err)
	}
	got := f.waitMsgs(t, "Sink", 2)
	if seq, _ := message.Int(got[1]["seq"]); seq != -1 {
		t.Fatalf("Sink got %v, want the message forced through the bus", got[1])
	}
	if n := f.h.Inlined(host.RouterName) - before; n != 0 {
		t.Errorf("%d messages routed inline, want the forced one through the bus", n)
	}
}
