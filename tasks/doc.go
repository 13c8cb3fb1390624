// Package tasks registers the framework's built-in tasks in the "builtin"
// namespace. Import it (the multimodule binary does) to make them
// available:
//
//   - Router: routes every emitted message by its config.
//
// Each built-in lives in its own subpackage; this package only imports
// them for their registration.
package tasks

import (
	_ "github.com/multimodule/multimodule/tasks/routertask" // Router
)
