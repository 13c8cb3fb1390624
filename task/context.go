package task

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task/internal/taskconv"
)

// Runtime is what a host provides to the tasks it runs. Task authors do
// not implement it: to unit-test a task without a daemon, use package
// task/tasktest, whose Recorder hosts the task and records what it does.
type Runtime interface {
	// Context is cancelled when the task is unloaded or the host stops.
	Context() context.Context
	// Config returns the task's current config (do not modify it).
	Config() map[string]any
	// Emit delivers msg (source already set) to the Router.
	Emit(msg message.Message) error
	// Send delivers msg to queue qname (on host destination, if not empty).
	Send(qname, destination string, msg message.Message) error
	// Recur schedules work every interval under name, replacing the
	// interval of an existing schedule of that name (never duplicating it).
	Recur(name string, interval time.Duration, work func(tc *Context))
	// StopRecur cancels the schedule called name, if there is one.
	StopRecur(name string)
	// StopRecurs cancels every schedule of the task.
	StopRecurs()
	// Out writes a record to an out-of-band channel.
	Out(channel, text string, details map[string]any)
	// Logger is the task's structured logger.
	Logger() *slog.Logger
	// Process names the hosting process: "main" for the daemon, or the
	// task whose external process this is.
	Process() string
}

// Context is a task's view of its host, passed to every call. It is only
// valid on the task's own goroutine (inside Message, SetConfig, recurring
// work and Close).
type Context struct {
	name  string
	src   any // name as a message value, boxed once (Emit sets it per message)
	rt    Runtime
	state map[string]any
	seq   int
}

// NewContext returns the Context of task name on runtime rt. Hosts call
// it (so does package task/tasktest, for unit tests).
func NewContext(name string, rt Runtime) *Context {
	return &Context{name: name, src: name, rt: rt, state: map[string]any{}}
}

// Name is the task's name, which is also its queue's name.
func (tc *Context) Name() string { return tc.name }

// Context is cancelled when the task is unloaded or the host stops; use it
// for anything that blocks.
func (tc *Context) Context() context.Context { return tc.rt.Context() }

// Config returns the task's current config. Do not modify it.
func (tc *Context) Config() map[string]any { return tc.rt.Config() }

// State is the task's state map. A stateful task's state is saved every
// second (or intervals.save_state) and on exit, and given back after any
// restart. Modify it in place or replace it with SetState.
func (tc *Context) State() map[string]any { return tc.state }

// SetState replaces the task's state map (nil means empty).
func (tc *Context) SetState(s map[string]any) {
	if s == nil {
		s = map[string]any{}
	}
	tc.state = s
}

// Emit sends msg to the Router, which decides where it goes. It sets
// "source" to this task's name, first copying an existing "source" to
// "previous_source". The host owns msg after Emit: do not modify it.
func (tc *Context) Emit(msg message.Message) error {
	if msg == nil {
		return fmt.Errorf("task %s: emit: nil message", tc.name)
	}
	if src, ok := msg["source"]; ok {
		msg["previous_source"] = src
	}
	msg["source"] = tc.src
	if err := tc.rt.Emit(msg); err != nil {
		return fmt.Errorf("task %s: emit: %w", tc.name, err)
	}
	return nil
}

// Send delivers msg straight to queue qname, bypassing the Router. Most
// tasks should Emit instead and let the Router's config decide.
func (tc *Context) Send(qname string, msg message.Message) error {
	if err := tc.rt.Send(qname, "", msg); err != nil {
		return fmt.Errorf("task %s: send to %s: %w", tc.name, qname, err)
	}
	return nil
}

// SendTo delivers msg to queue qname on another host scope (destination);
// an empty destination means this host.
func (tc *Context) SendTo(qname, destination string, msg message.Message) error {
	if err := tc.rt.Send(qname, destination, msg); err != nil {
		return fmt.Errorf("task %s: send to %s@%s: %w", tc.name, qname, destination, err)
	}
	return nil
}

// NamedRecur runs work every interval, on the task's goroutine, under
// name: however often it is called (for example from every SetConfig),
// there is one schedule per name; a new interval replaces the old one. The
// task's config can override the interval: intervals: {<name>: seconds}.
//
// The returned stop cancels the schedule called name. As there is one
// schedule per name, it is the schedule a later NamedRecur of the same
// name updates, too. Call stop on the task's goroutine, like every
// Context method; calling it again, or after StopRecurs, does nothing.
func (tc *Context) NamedRecur(name string, interval time.Duration, work func(tc *Context)) (stop func()) {
	if d, ok := taskconv.IntervalOverride(tc.rt.Config(), name); ok {
		interval = d
	}
	tc.rt.Recur(name, interval, work)
	return func() { tc.rt.StopRecur(name) }
}

// Recur runs work every interval under a fresh name, which the host shows
// (in package tasktest, Recorder.Recurs); stop cancels it. Prefer
// NamedRecur in SetConfig, which is called many times: each Recur adds a
// schedule.
func (tc *Context) Recur(interval time.Duration, work func(tc *Context)) (stop func()) {
	tc.seq++
	name := fmt.Sprintf(".recur%d", tc.seq)
	tc.rt.Recur(name, interval, work)
	return func() { tc.rt.StopRecur(name) }
}

// StopRecurs cancels every recurring job of the task (those of NamedRecur
// and of Recur). The host stops them all by itself when the task is
// unloaded.
func (tc *Context) StopRecurs() { tc.rt.StopRecurs() }

// Log writes text to the "log" channel; kv are key/value detail pairs.
func (tc *Context) Log(text string, kv ...any) { tc.Out(oob.ChannelLog, text, kv...) }

// Debug writes text to the "debug" channel.
func (tc *Context) Debug(text string, kv ...any) { tc.Out(oob.ChannelDebug, text, kv...) }

// Alert writes text to the "alert" channel.
func (tc *Context) Alert(text string, kv ...any) { tc.Out(oob.ChannelAlert, text, kv...) }

// Error writes text to the "error" channel.
func (tc *Context) Error(text string, kv ...any) { tc.Out(oob.ChannelError, text, kv...) }

// Out writes text to any out-of-band channel, with key/value details.
func (tc *Context) Out(channel, text string, kv ...any) {
	tc.rt.Out(channel, text, pairs(kv))
}

// Process names the process hosting the task: "main" for the daemon, or
// the name of the task whose external process this is.
func (tc *Context) Process() string { return tc.rt.Process() }

// Logger is the task's structured logger (its records go to the
// out-of-band channels too).
func (tc *Context) Logger() *slog.Logger { return tc.rt.Logger() }

func pairs(kv []any) map[string]any {
	if len(kv) == 0 {
		return nil
	}
	out := make(map[string]any, len(kv)/2+1)
	for i := 0; i < len(kv); i += 2 {
		key, ok := kv[i].(string)
		if !ok {
			key = fmt.Sprint(kv[i])
		}
		if i+1 < len(kv) {
			out[key] = kv[i+1]
		} else {
			out["!BADKEY"] = kv[i]
		}
	}
	return out
}
