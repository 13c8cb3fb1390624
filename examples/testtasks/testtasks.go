// Package testtasks registers the MultiModuleTest namespace: the tutorial
// tasks (Example1, Example2) and the fixtures the original suite used.
// Enable them in a daemon with -p MultiModuleTest.
package testtasks

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/transform"
)

// Namespace is the namespace these tasks register under.
const Namespace = "MultiModuleTest"

// Stdout is where Example2 prints; tests may replace it before starting a
// host.
var (
	stdoutMu sync.Mutex
	Stdout   io.Writer = os.Stdout
)

func init() {
	reg := func(name string, stateful bool, f func() (task.Task, error)) {
		task.Register(task.Definition{Namespace: Namespace, Name: name, Stateful: stateful, New: f})
	}
	reg("Example1", true, func() (task.Task, error) { return &Example1{}, nil })
	reg("Example2", false, func() (task.Task, error) { return task.Func(example2), nil })
	reg("OtherModule", true, func() (task.Task, error) { return &OtherModule{}, nil })
	reg("OtherExternalModule", true, func() (task.Task, error) { return &OtherModule{external: true}, nil })
	reg("YetAnotherExternalModule", true, func() (task.Task, error) { return &OtherModule{yetAnother: true}, nil })
	reg("Incrementer", false, func() (task.Task, error) { return task.Func(incrementer), nil })
	reg("Counter", true, func() (task.Task, error) { return Counter{}, nil })
	reg("StatelessProducer", false, func() (task.Task, error) { return &StatelessProducer{}, nil })
	// Stateful so that they can be configured external too: they fail to
	// load inside the daemon and in their own process alike.
	// TaskDoesNotCompile is the original's name; DoesNotCompile the
	// shorter one.
	for _, name := range []string{"TaskDoesNotCompile", "DoesNotCompile"} {
		msg := name + " never loads (test fixture)"
		reg(name, true, func() (task.Task, error) { return nil, errors.New(msg) })
	}
}

// Example1 is the tutorial's stateful counter: on config it starts (once)
// a 1-second job emitting {ct: state.ct++, outstr: config.outstr}; a
// message with new_ct sets state.ct. With config.static_forwards true,
// each message also carries the original's itinerary: static_forwards to
// Example2 with the transform {some: transform}, so it reaches Example2
// whatever the Router's routes say.
type Example1 struct{}

// SetConfig starts the recurring emit; calling it again does not add a
// second schedule.
func (e *Example1) SetConfig(tc *task.Context, config map[string]any) error {
	tc.NamedRecur("example1_emit", time.Second, func(tc *task.Context) {
		st := tc.State()
		ct, _ := message.Int(st["ct"])
		st["ct"] = ct + 1
		msg := message.Message{"ct": ct, "outstr": tc.Config()["outstr"]}
		if message.Truthy(tc.Config()["static_forwards"]) {
			msg["static_forwards"] = []any{[]any{map[string]any{
				"transform": map[string]any{"some": "transform"},
				"forward":   map[string]any{"qname": "Example2"},
			}}}
		}
		if err := tc.Emit(msg); err != nil {
			tc.Error(err.Error())
		}
	})
	return nil
}

// Message takes new_ct into the state.
func (e *Example1) Message(tc *task.Context, msg message.Message) error {
	if v, ok := msg["new_ct"]; ok {
		n, ok := message.Int(v)
		if !ok {
			return fmt.Errorf("new_ct must be an integer, got %v", v)
		}
		tc.State()["ct"] = n
	}
	return nil
}

func example2(tc *task.Context, msg message.Message) error {
	ct, ok1 := msg["ct"]
	outstr, ok2 := msg["outstr"]
	if !ok1 || !ok2 {
		return nil
	}
	cts, _ := message.ScalarText(ct)
	outs, _ := message.ScalarText(outstr)
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	_, err := fmt.Fprintf(Stdout, "Example2: received a message: %s (%s)\n", cts, outs)
	return err
}

// OtherModule, OtherExternalModule and YetAnotherExternalModule are the
// original's stateful counters. Each sets my_ct = ct + config.increment_by
// and module_pid (the pid of the process hosting it), keeps the last my_ct
// in state.most_recent and a count of messages in state.message_ct, and
// emits the message. They differ as the originals did:
//
//   - OtherModule applies config.transform after computing my_ct;
//   - OtherExternalModule runs the test hooks first (see hook), applies
//     config.transform before computing my_ct, and keeps a running sum of
//     increment_by in state.sum_increment_by, which it also puts in the
//     message;
//   - YetAnotherExternalModule has no transform and no hooks.
type OtherModule struct {
	external   bool // OtherExternalModule
	yetAnother bool // YetAnotherExternalModule
	tr         *transform.Transform
	leak       [][]byte
}

// SetConfig compiles config.transform.
func (o *OtherModule) SetConfig(tc *task.Context, config map[string]any) error {
	o.tr = nil
	if o.yetAnother {
		return nil
	}
	if t, ok := config["transform"].(map[string]any); ok {
		tr, err := transform.Compile(t)
		if err != nil {
			return err
		}
		o.tr = tr
	}
	return nil
}

// Message handles one message (see the type's doc).
func (o *OtherModule) Message(tc *task.Context, msg message.Message) error {
	if o.external {
		done, err := o.hook(tc, msg)
		if done || err != nil {
			return err
		}
		o.applyTransform(tc, msg)
	}
	ct, _ := message.Int(msg["ct"])
	inc, _ := message.Int(tc.Config()["increment_by"])
	myCt := ct + inc
	msg["my_ct"] = myCt
	st := tc.State()
	if o.external {
		sum, _ := message.Int(st["sum_increment_by"])
		sum += inc
		st["sum_increment_by"] = sum
		msg["sum_increment_by"] = sum
	}
	msg["module_pid"] = int64(os.Getpid())
	st["most_recent"] = myCt
	n, _ := message.Int(st["message_ct"])
	st["message_ct"] = n + 1
	if !o.external {
		o.applyTransform(tc, msg)
	}
	return tc.Emit(msg)
}

func (o *OtherModule) applyTransform(tc *task.Context, msg message.Message) {
	if o.tr != nil {
		if err := o.tr.Apply(msg, nil); err != nil {
			tc.Error(err.Error())
		}
	}
}

// hook runs the test hooks of OtherExternalModule, in the original's
// order: crash_me, uncaught_exception, leak_memory, spin_cpu, fill_queue,
// oob_testing. done reports that the message is fully handled (oob_testing
// writes its record and emits nothing, as in the original).
func (o *OtherModule) hook(tc *task.Context, msg message.Message) (done bool, err error) {
	if err := processHooks(tc, msg); err != nil {
		return true, err
	}
	if message.Truthy(msg["uncaught_exception"]) {
		return true, errors.New("uncaught_exception requested by the message")
	}
	if n, ok := message.Int(msg["leak_memory"]); ok && n > 0 {
		b := make([]byte, n)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1 // touch every page so it is resident
		}
		o.leak = append(o.leak, b)
	}
	if secs, ok := message.Float(msg["spin_cpu"]); ok && secs > 0 {
		end := time.Now().Add(time.Duration(secs * float64(time.Second)))
		x := 0
		for time.Now().Before(end) {
			x++
		}
		_ = x
	}
	if q, ok := msg["fill_queue"].(string); ok && q != "" {
		total, ok := message.Int(msg["fill_queue_bytes"])
		if !ok || total <= 0 {
			total = 1024
		}
		junk := string(make([]byte, 1024))
		for sent := int64(0); sent < total; sent += 1024 {
			if err := tc.Send(q, message.Message{"junk": junk}); err != nil {
				return true, err
			}
		}
	}
	if ch := oobChannel(msg["oob_testing"]); ch != "" {
		text := "oob_testing from " + tc.Name()
		if t, ok := msg["oob_text"].(string); ok {
			text = t
		}
		tc.Out(ch, text, "pid", int64(os.Getpid()), "message", map[string]any(msg))
		return true, nil
	}
	return false, nil
}

// oobChannel reads oob_testing: a channel name, or the original's form
// {type: channel}.
func oobChannel(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		s, _ := v["type"].(string)
		return s
	}
	return ""
}

func incrementer(tc *task.Context, msg message.Message) error {
	i, _ := message.Int(msg["i"])
	msg["i"] = i + 1
	return tc.Emit(msg)
}

// StatelessProducer emits config.emit_rate messages per second (1 when
// emit_rate is absent; 0 stops it), each {sending_pid, emit_ct, emit_rate,
// from: StatelessProducer, i: emit_ct} with emit_ct counting from 1 for the
// life of the process, and config.other_stuff applied as a transform.
// Incrementer adds one to i, so a message through both has
// i == emit_ct + 1.
type StatelessProducer struct {
	ct     int64
	credit float64
	other  *transform.Transform
}

// producerRate is config.emit_rate, 1 when absent.
func producerRate(config map[string]any) float64 {
	v, ok := config["emit_rate"]
	if !ok || v == nil {
		return 1
	}
	r, _ := message.Float(v)
	return r
}

// SetConfig (re)starts the producing schedule.
func (p *StatelessProducer) SetConfig(tc *task.Context, config map[string]any) error {
	p.other = nil
	if t, ok := config["other_stuff"].(map[string]any); ok {
		tr, err := transform.Compile(t)
		if err != nil {
			return fmt.Errorf("other_stuff: %w", err)
		}
		p.other = tr
	}
	rate := producerRate(config)
	if rate <= 0 {
		tc.StopRecurs()
		return nil
	}
	tick := 10 * time.Millisecond
	if rate < 100 {
		tick = time.Duration(float64(time.Second) / rate)
	}
	tc.NamedRecur("produce", tick, func(tc *task.Context) {
		r := producerRate(tc.Config())
		p.credit += r * tick.Seconds()
		for ; p.credit >= 1; p.credit-- {
			p.ct++
			msg := message.Message{
				"sending_pid": int64(os.Getpid()),
				"emit_ct":     p.ct,
				"emit_rate":   tc.Config()["emit_rate"],
				"from":        "StatelessProducer",
				"i":           p.ct,
			}
			if msg["emit_rate"] == nil {
				msg["emit_rate"] = int64(1)
			}
			if p.other != nil {
				if err := p.other.Apply(msg, nil); err != nil {
					tc.Error(err.Error())
				}
			}
			if err := tc.Emit(msg); err != nil {
				tc.Error(err.Error())
				return
			}
		}
	})
	return nil
}

// Message ignores input.
func (p *StatelessProducer) Message(tc *task.Context, msg message.Message) error { return nil }

// Counter is a stateful counter for the cluster tests: each message adds
// 1 to state.count and is emitted as {count, seq, pid} (seq copied from
// the message, pid the process that counted it). A message whose seq is not above the last one seen (a
// duplicate, or one out of order) adds 1 to state.disorder as well.
type Counter struct{}

// Message counts msg.
func (Counter) Message(tc *task.Context, msg message.Message) error {
	st := tc.State()
	n, _ := message.Int(st["count"])
	n++
	st["count"] = n
	if seq, ok := message.Int(msg["seq"]); ok {
		if last, seen := message.Int(st["last_seq"]); seen && seq <= last {
			d, _ := message.Int(st["disorder"])
			st["disorder"] = d + 1
		}
		st["last_seq"] = seq
	}
	return tc.Emit(message.Message{"count": n, "seq": msg["seq"], "pid": int64(os.Getpid())})
}
