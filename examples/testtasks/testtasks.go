// Package testtasks registers the MultiModuleTest namespace: the tutorial
// tasks (Example1, Example2) and the fixtures the original suite used
// (SPEC 17). Enable them in a daemon with -p MultiModuleTest.
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
	reg("OtherExternalModule", true, func() (task.Task, error) { return &OtherModule{hooks: true}, nil })
	reg("Incrementer", false, func() (task.Task, error) { return task.Func(incrementer), nil })
	reg("StatelessProducer", false, func() (task.Task, error) { return &StatelessProducer{}, nil })
	// Stateful so that it can be configured external too: it fails to load
	// inside the daemon and in its own process alike.
	reg("DoesNotCompile", true, func() (task.Task, error) {
		return nil, errors.New("DoesNotCompile never loads (test fixture)")
	})
}

// Example1 is the tutorial's stateful counter (SPEC 16): on config it
// starts (once) a 1-second job emitting {ct: state.ct++, outstr:
// config.outstr}; a message with new_ct sets state.ct.
type Example1 struct{}

// SetConfig starts the recurring emit; calling it again does not add a
// second schedule.
func (e *Example1) SetConfig(tc *task.Context, config map[string]any) error {
	tc.NamedRecur("example1_emit", time.Second, func(tc *task.Context) {
		st := tc.State()
		ct, _ := message.Int(st["ct"])
		st["ct"] = ct + 1
		if err := tc.Emit(message.Message{"ct": ct, "outstr": tc.Config()["outstr"]}); err != nil {
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

// OtherModule (and OtherExternalModule, with hooks) adds
// config.increment_by to the message's ct into my_ct, records module_pid,
// applies config.transform, counts messages in its state, and emits.
type OtherModule struct {
	hooks bool
	tr    *transform.Transform
	leak  [][]byte
}

// SetConfig compiles config.transform.
func (o *OtherModule) SetConfig(tc *task.Context, config map[string]any) error {
	o.tr = nil
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
	if o.hooks {
		if err := o.hook(tc, msg); err != nil {
			return err
		}
	}
	ct, _ := message.Int(msg["ct"])
	inc, _ := message.Int(tc.Config()["increment_by"])
	msg["my_ct"] = ct + inc
	msg["module_pid"] = int64(os.Getpid())
	st := tc.State()
	n, _ := message.Int(st["message_ct"])
	st["message_ct"] = n + 1
	if o.tr != nil {
		if err := o.tr.Apply(msg, nil); err != nil {
			tc.Error(err.Error())
		}
	}
	return tc.Emit(msg)
}

// hook runs the test hooks of OtherExternalModule that do not need an
// external process; process-level ones are in hooks.go.
func (o *OtherModule) hook(tc *task.Context, msg message.Message) error {
	if message.Truthy(msg["uncaught_exception"]) {
		return errors.New("uncaught_exception requested by the message")
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
		total, _ := message.Int(msg["fill_queue_bytes"])
		junk := string(make([]byte, 1024))
		for sent := int64(0); sent < total; sent += 1024 {
			if err := tc.Send(q, message.Message{"junk": junk}); err != nil {
				return err
			}
		}
	}
	if ch, ok := msg["oob_testing"].(string); ok && ch != "" {
		text := "oob_testing from " + tc.Name()
		if t, ok := msg["oob_text"].(string); ok {
			text = t
		}
		tc.Out(ch, text, "pid", int64(os.Getpid()))
	}
	return processHooks(tc, msg)
}

func incrementer(tc *task.Context, msg message.Message) error {
	i, _ := message.Int(msg["i"])
	msg["i"] = i + 1
	return tc.Emit(msg)
}

// StatelessProducer emits config.emit_rate messages per second, each with
// a running emit_ct.
type StatelessProducer struct {
	ct     int64
	credit float64
}

// SetConfig (re)starts the producing schedule.
func (p *StatelessProducer) SetConfig(tc *task.Context, config map[string]any) error {
	rate, _ := message.Float(config["emit_rate"])
	if rate <= 0 {
		tc.DelRecurs(tc.Name())
		return nil
	}
	tick := 10 * time.Millisecond
	if rate < 100 {
		tick = time.Duration(float64(time.Second) / rate)
	}
	tc.NamedRecur("produce", tick, func(tc *task.Context) {
		r, _ := message.Float(tc.Config()["emit_rate"])
		p.credit += r * tick.Seconds()
		for ; p.credit >= 1; p.credit-- {
			p.ct++
			if err := tc.Emit(message.Message{"emit_ct": p.ct}); err != nil {
				tc.Error(err.Error())
				return
			}
		}
	})
	return nil
}

// Message ignores input.
func (p *StatelessProducer) Message(tc *task.Context, msg message.Message) error { return nil }
