// Package placement runs tasks whose config says where in a cluster of
// boxes they run (`host`, `hosts`, `placement: {any: true}`), on the box
// that holds the task's lease, with the task's state and its position in
// its queue checkpointed together in JetStream key-value buckets: a task
// moves between boxes by config, and is taken over by a live box when
// its box dies, with exactly-once effects on its state.
//
// The pieces: the Manager (manager.go) keeps this box alive in the
// cluster, decides which placed tasks this box should run, takes and
// renews their leases and hands each task it holds to the Runner with a
// Claim; the Runner (runner.go) runs the task: it reads the task's queue
// in the cluster scope, skips what the checkpoint already covers, and
// saves state and position through the Claim before it acknowledges the
// messages they cover.
package placement

import (
	"context"
	"errors"

	"github.com/multimodule/multimodule/host"
)

// ClusterScope is the host scope on the bus that holds the queues of
// placed tasks: a placed task's queue is addressed by its name alone,
// whichever box runs it. No box may be called this.
const ClusterScope = host.ClusterScope

// ErrFenced reports that this box no longer holds a task: another box
// took it over (or the lease ran out). Nothing may be saved or
// acknowledged for the task after it.
var ErrFenced = errors.New("placement: the task is held by another box now")

// Position is where in its queue a task is: the stream sequence of the
// last bus message it handled and that message's place in its batch
// (transit.Delivery.Seq and its member index). The zero Position is
// before the first message.
type Position struct {
	Seq    uint64 `json:"seq"`
	Member int    `json:"member"`
}

// Covers reports whether a message at (seq, member) is at or before p:
// already handled as far as the checkpoint holding p is concerned.
func (p Position) Covers(seq uint64, member int) bool {
	return seq < p.Seq || seq == p.Seq && member <= p.Member
}

// Checkpoint is what a box takes over with a task: its state and the
// position in its queue that this state covers, as last saved.
type Checkpoint struct {
	Holder   string         `json:"holder"`   // the box that saved it
	Epoch    uint64         `json:"epoch"`    // one more at each take-over
	Position Position       `json:"position"` // messages at or before it are in State
	State    map[string]any `json:"state"`    // nil: no state saved yet
}

// A Claim is a box's hold on one placed task, from the take-over of its
// lease until it is released or lost.
type Claim interface {
	// Task is the task's name.
	Task() string
	// Checkpoint is the checkpoint as taken over (Holder and Epoch are
	// this box's).
	Checkpoint() Checkpoint
	// Save stores state and the position it covers as the task's
	// checkpoint, if this box still holds the task: one conditional
	// write, so that a box that has lost the task cannot overwrite the
	// new holder's checkpoint. It returns ErrFenced (wrapped) when the
	// task is held by another box now. Only after Save returns nil may
	// the Runner acknowledge the messages up to pos.
	Save(ctx context.Context, state map[string]any, pos Position) error
	// Lost is closed when this box loses the task without releasing it
	// (its lease could not be renewed, or a Save was fenced): the Runner
	// stops the task at once, saving and acknowledging nothing more.
	Lost() <-chan struct{}
}

// A Runner runs the placed tasks the Manager hands it.
type Runner interface {
	// Start runs task name with config cfg from claim c's checkpoint. It
	// returns once the task takes messages (or failed to start: the
	// Manager then releases the lease and tries again later).
	Start(ctx context.Context, name string, cfg map[string]any, c Claim) error
	// Stop stops task name for a move: it takes no more messages, saves
	// a last checkpoint through the Claim, acknowledges what it covers,
	// and returns; the Manager releases the lease after it returns.
	Stop(ctx context.Context, name string) error
	// Configure gives a running task a new config (its placement
	// unchanged or still including this box).
	Configure(name string, cfg map[string]any) error
}
