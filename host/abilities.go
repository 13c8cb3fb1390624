package host

import (
	"sync/atomic"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// The abilities a task may have beyond those of package task
// (task.Configurer, task.Stateful, task.Closer, task.Inliner): the host
// looks for them by type assertion when it loads or runs the task. They
// are between the host and the tasks that ship with it (the exec adapter,
// the Router), but any task may have them. An implementation asserts its
// interface at compile time,
//
//	var _ host.AheadTaker = (*Task)(nil)
//
// so that a renamed or changed method fails to build instead of silently
// turning the ability off.

// AheadTaker is a task that wants to know which messages its Message is
// called with next: the exec adapter writes them to its co-process ahead
// (protocol 2, pipelined), and still answers each in its own Message call.
// The host promises that these are the task's next calls, in order. It
// calls Ahead on the task's goroutine, for a run of at least two messages
// taken from the mailbox together.
type AheadTaker interface {
	Ahead(tc *task.Context, msgs []message.Message)
}

// CanonicalSender is a task that promises that every message it emits or
// sends holds only canonical values (package message), so its sends skip
// the check (transit.HostSendOptions.Canonical). The built-in Router does: it
// only passes on the messages it received, changed by compiled
// transforms, whose values are canonical. The host asks once, when the
// task is first configured.
type CanonicalSender interface {
	SendsCanonical() bool
}

// PIDReporter is a task that runs a process of its own (an exec task's
// co-process): PID is that process's id, or 0 while none runs. The host
// reads it after each message or batch and once configured, for the
// monitor (TaskInfo.CoPID) and the task's status file.
type PIDReporter interface {
	PID() int
}

// RestartCounter is a task whose own process may restart (an exec task's
// co-process). When it loads the task, the host gives it the counter of
// MetricStartCoprocess, which it adds every restart to, so that the
// monitor sees a crash loop that the task's own restarts would otherwise
// hide.
type RestartCounter interface {
	CountRestartsIn(c *atomic.Uint64)
}
