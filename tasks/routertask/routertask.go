// Package routertask is the built-in Router task: a thin wrapper around
// package router. Its config is a router config ({routes: …}); a config
// without routes routes nothing. A bad config is rejected with the
// router's error (naming the route and field) and the previous routes stay
// in force. Deliveries go to tasks hosted in this process directly and
// through the bus otherwise.
package routertask

import (
	"context"
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
	"github.com/multimodule/multimodule/task"
)

// Name is the Router task's name and queue.
const Name = "Router"

func init() {
	task.Register(task.Definition{
		Namespace: task.Builtin,
		Name:      Name,
		New:       func() (task.Task, error) { return &Task{}, nil },
	})
}

// Task is the Router task.
type Task struct {
	r   *router.Router
	fwd forwarder
}

// forwarder sends the routed messages from the task's context.
type forwarder struct{ tc *task.Context }

func (f *forwarder) Forward(_ context.Context, fwd router.Forward, m message.Message) error {
	return f.tc.SendTo(fwd.QName, fwd.Destination, m)
}

// SetConfig compiles the routes; on error the previous routes stay.
func (t *Task) SetConfig(tc *task.Context, config map[string]any) error {
	rc := map[string]any{"routes": []any{}}
	if routes, ok := config["routes"]; ok {
		rc["routes"] = routes
	}
	r, err := router.Compile(rc)
	if err != nil {
		return fmt.Errorf("router config: %w", err)
	}
	t.r = r
	return nil
}

// Message routes one message. The message is the task's to give away (the
// host does not read it after a handler succeeded), so the last delivery
// takes it without a copy (router.RouteOwned).
func (t *Task) Message(tc *task.Context, msg message.Message) error {
	if t.r == nil {
		return nil
	}
	t.fwd.tc = tc
	return t.r.RouteOwned(tc.Context(), msg, &t.fwd)
}

// SendsCanonical tells the host that the Router sends only canonical
// values: it passes on messages it received (checked when they were sent
// to it), changed only by compiled transforms, whose results are
// canonical. Its sends skip the check a send otherwise makes.
func (t *Task) SendsCanonical() bool { return true }

// HandlesInline tells the host that a message emitted while the Router is
// idle may be routed on the emitting task's goroutine (one message at a
// time, as on its own): routing keeps no per-goroutine state.
func (t *Task) HandlesInline() bool { return true }

// Router returns the compiled router (for its counters).
func (t *Task) Router() *router.Router { return t.r }

var (
	_ task.Configurer  = (*Task)(nil)
	_ router.Forwarder = (*forwarder)(nil)
)
