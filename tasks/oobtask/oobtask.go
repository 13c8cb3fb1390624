// Package oobtask is the built-in OutOfBand task: the daemon's handler of
// out-of-band records (log, error, alert, debug). Its config sets the
// channel filters (include_matches / exclude_matches, applied live); the
// records it receives — every record of every external process, which
// sends them to this task's queue — are handled by the daemon's
// dispatcher exactly like the daemon's own.
//
// The task is bound to the dispatcher of the process that hosts it, so it
// is not registered in a namespace: the daemon offers it through a source
// of its own (New).
package oobtask

import (
	"context"
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
)

// Name is the OutOfBand task's name and queue.
const Name = "OutOfBand"

// Dispatcher is what the task needs of the process' out-of-band
// dispatcher (*oob.Dispatcher has it).
type Dispatcher interface {
	// SetFilters applies the task's config: the channel filters.
	SetFilters(cfg map[string]any) error
	// Handle handles one record as the process' -o says.
	Handle(ctx context.Context, r oob.Record)
}

// Task is the OutOfBand task.
type Task struct{ disp Dispatcher }

// New returns an OutOfBand task handing its records to disp.
func New(disp Dispatcher) *Task { return &Task{disp: disp} }

// SetConfig applies the channel filters; on error the previous ones stay.
func (t *Task) SetConfig(tc *task.Context, cfg map[string]any) error {
	return t.disp.SetFilters(cfg)
}

// Message handles one record sent by an external process.
func (t *Task) Message(tc *task.Context, m message.Message) error {
	r, err := oob.RecordFromMessage(m)
	if err != nil {
		return fmt.Errorf("not an out-of-band record: %w", err)
	}
	t.disp.Handle(tc.Context(), r)
	return nil
}

var (
	_ task.Configurer = (*Task)(nil)
	_ Dispatcher      = (*oob.Dispatcher)(nil)
)
