// Package tasks registers the framework's built-in tasks in the "builtin"
// namespace. Import it (the multimodule binary does) to make them
// available:
//
//   - Router (tasks/routertask): routes every emitted message by its config.
//
// The daemon's own built-in tasks live here too, each in its own
// subpackage, but are not registered: each is bound to the process that
// runs it, which offers it through a task source of its own.
//
//   - MultiModule (tasks/monitortask): the monitor: samples, evaluates,
//     alerts and failsafes.
//   - OutOfBand (tasks/oobtask): handles the out-of-band records of the
//     external processes; its config holds the channel filters.
//
// No built-in task imports the daemon: what it needs of the daemon is a
// small interface it receives. This package only imports the registered
// built-ins for their registration.
package tasks

import (
	_ "github.com/multimodule/multimodule/tasks/routertask" // Router
)
