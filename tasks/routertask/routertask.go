// Package routertask is the built-in Router task: a thin wrapper around
// package router. Its config is a router config ({routes: …} and the
// router's options: max_passes, allow_control, control_queue,
// static_forwards); a config without routes routes nothing. A bad config
// is rejected with the router's error (naming the route and field) and the
// previous routes stay in force. Deliveries go to tasks hosted in this
// process directly and through the bus otherwise.
//
// A message the router refuses as a whole (a routing loop, control data,
// a transform over its limits) is moved to the dead-letter queue
// (transit.DeadLetterQueue) with the reason in
// .ipc_transit_meta.dead_letter, and reported on the error channel. The
// first routing loop after each configuration also raises an alert.
package routertask

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/transit"
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

	loopAlerted bool // a routing loop was alerted since the last SetConfig
}

// forwarder sends the routed messages from the task's context.
type forwarder struct{ tc *task.Context }

func (f *forwarder) Forward(_ context.Context, fwd router.Forward, m message.Message) error {
	return f.tc.SendTo(fwd.QName, fwd.Destination, m)
}

// SetConfig compiles the routes; on error the previous routes stay.
func (t *Task) SetConfig(tc *task.Context, config map[string]any) error {
	rc := map[string]any{"routes": []any{}}
	for _, k := range []string{"routes", "max_passes", "allow_control", "control_queue", "static_forwards"} {
		if v, ok := config[k]; ok {
			rc[k] = v
		}
	}
	r, err := router.Compile(rc)
	if err != nil {
		return fmt.Errorf("router config: %w", err)
	}
	t.r = r
	t.loopAlerted = false
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
	err := t.r.CountPass(msg)
	if err == nil {
		err = t.r.RouteOwned(tc.Context(), msg, &t.fwd)
		if err == nil {
			return nil
		}
	}
	var refusal *router.Refusal
	if !errors.As(err, &refusal) {
		return err
	}
	// RouteOwned did not give msg away: it failed.
	if errors.Is(refusal, router.ErrRoutingLoop) && !t.loopAlerted {
		t.loopAlerted = true
		tc.Alert("routing loop: a message passed through the Router too many times; it is in the dead-letter queue "+transit.DeadLetterQueue+
			" (alerted once until the Router is configured again)", "reason", refusal.Reason, "source", msg["source"])
	}
	if dlErr := deadLetter(tc, msg, refusal); dlErr != nil {
		return errors.Join(err, dlErr)
	}
	return fmt.Errorf("moved to the dead-letter queue %s: %w", transit.DeadLetterQueue, err)
}

// deadLetter sends msg to the dead-letter queue with the reason, as the
// transport does: {.ipc_transit_meta: {dead_letter: {reason, queue, time,
// passes}}}. The count of passes moves into dead_letter, so that the
// message can be sent back as it is.
func deadLetter(tc *task.Context, msg message.Message, refusal *router.Refusal) error {
	meta := msg.EnsureMeta()
	info := map[string]any{
		"reason": refusal.Reason,
		"queue":  tc.Name(),
		"time":   float64(time.Now().UnixNano()) / 1e9,
	}
	if n, ok := message.Int(meta[router.PassesKey]); ok {
		info["passes"] = n
	}
	delete(meta, router.PassesKey)
	meta["dead_letter"] = info
	return tc.Send(transit.DeadLetterQueue, msg)
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
	_ task.Configurer      = (*Task)(nil)
	_ task.Inliner         = (*Task)(nil)
	_ host.CanonicalSender = (*Task)(nil)
	_ router.Forwarder     = (*forwarder)(nil)
)
