package daemon

import (
	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// role is what differs between the two ways this program runs: as the
// daemon (mainRole, mainrole.go) or as the external process of one task
// (-m, externalRole, externalrole.go). Run does the rest, the same for
// both; it calls these about in the order they are listed.
type role interface {
	// process names this process: "main", or the task's name.
	process() string
	// outOfBand is how this process handles its out-of-band records,
	// given -o's handling.
	outOfBand(fromFlag oob.Handling) oob.Handling
	// begin starts what the role does from its very start; Run calls
	// the function it returns when it returns.
	begin() (end func())
	// builtins registers the built-in tasks bound to this process.
	builtins(reg *registry.Registry)
	// open takes the role's lock of the state directory and opens what
	// it needs before the transport; release undoes it.
	open() (release func(), err error)
	// options sets the role's transport and host options.
	options(t *transit.Options, h *host.Options)
	// placement is the host's Placement: where each task runs.
	placement(name string, def task.Definition, cfg map[string]any) host.Placement
	// configChanged is told that a task's config (or its program in a
	// -p directory) changed.
	configChanged(name string)
	// start loads the tasks the role hosts from the start, once the
	// host exists; an error ends Run.
	start() error
	// heapFloor is the garbage collector's heap-goal floor (gc.go).
	heapFloor() int64
	// addIntake adds the actors through which requests reach this
	// process: they stop first.
	addIntake(g *group)
	// ready is called once this process serves, before it says so.
	ready()
	// status fills in the role's part of this process' status file.
	status(st *store.Status)
	// addUpkeep adds the actors that keep the tasks as configured: they
	// stop after the intake and the config watchers, before the host's
	// orderly exit.
	addUpkeep(g *group)
}
