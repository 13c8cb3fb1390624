// Package task is the API for writing MultiModule tasks in Go.
//
// A task is a small piece of code that only receives and emits messages.
// It implements one required method, Message; everything else is optional
// and discovered by type assertion:
//
//	Task       Message(tc, msg) — called once per delivered message (required)
//	Configurer SetConfig(tc, config) — first configuration and every change
//	Closer     Close(tc) — clean-up when the task is unloaded
//	Inliner    HandlesInline() bool — Message is short and never blocks
//
// Func turns a plain function into a Task. A task is made known with
// Register, from an init function, as a Definition: its namespace and
// name, its constructor, and whether it is stateful (Definition.Stateful,
// the one place a task declares that it keeps state). The daemon's -p
// option lists the namespaces (and exec-task directories) to search after
// "builtin". How the framework finds and builds registered tasks is
// package task/registry; a task does not need it, nor Runtime, NewContext
// and Registered, which are for hosts.
//
// # Lifecycle
//
// The host (the daemon, or the external process of a task) drives a task
// through these steps, all on the task's own goroutine, one at a time, so
// task code needs no locks:
//
//  1. The task is constructed by the New function of its Definition, when
//     it first has config or a message waits in its queue.
//  2. A stateful task (Definition.Stateful) gets its last saved state
//     (Context.State).
//  3. SetConfig is called with its config; again whenever the config
//     changes by content (an identical resend does not call it). A task
//     loaded only because messages wait for it is configured with an empty
//     map.
//  4. Message is called for each message, in queue order. Recurring work
//     scheduled with Context.NamedRecur runs between messages, until the
//     stop function NamedRecur returned, or Context.StopRecurs, cancels
//     it. (An Inliner's Message may run on its sender's goroutine
//     instead; still one call at a time, in queue order.)
//  5. On unload or exit, recurring work stops, the state of a stateful
//     task is saved and Close is called.
//
// A handler that returns an error or panics is reported with the task name
// and message, counted, and the task goes on with the next message.
//
// Package task/tasktest unit-tests a task without a daemon.
package task

import (
	"github.com/multimodule/multimodule/message"
)

// Task is the one method every task implements: handle one message.
// Returning an error (or panicking) reports the failure; the task goes on
// with the next message.
type Task interface {
	Message(tc *Context, msg message.Message) error
}

// Func adapts a plain function to a Task.
type Func func(tc *Context, msg message.Message) error

// Message calls f.
func (f Func) Message(tc *Context, msg message.Message) error { return f(tc, msg) }

// Configurer is implemented by tasks that want their config. SetConfig is
// called when the task is first configured and again every time its config
// changes by content; it must be safe to call many times.
type Configurer interface {
	SetConfig(tc *Context, config map[string]any) error
}

// Closer is implemented by tasks that hold resources to release when they
// are unloaded.
type Closer interface {
	Close(tc *Context) error
}

// Inliner is implemented by tasks whose Message is short (a few
// microseconds) and never blocks: counting, filtering, recording,
// forwarding. When such a task is idle — its goroutine waits for work —
// the host may run Message for a message sent to it
// in the same process on the sender's goroutine, instead of handing the
// message over to the task's goroutine, which has to wake up and find a
// free core (tens to hundreds of microseconds on a busy machine). The
// task sees no difference: its calls still come one at a time, in queue
// order, never alongside its recurring work; Context.Emit still sends as
// the task. The host stops doing it while the task's recent messages took
// more than 2 µs each (the sender would otherwise do the task's work
// instead of its own), and a sender hands at most 1,024 messages per turn
// of its own work to tasks this way. The built-in Router is an Inliner. A
// task whose Message may block (disk, network, a lock held elsewhere, a
// long computation) must not claim it: it would hold up its senders.
type Inliner interface {
	HandlesInline() bool
}

var (
	_ Task = Func(nil)
)
