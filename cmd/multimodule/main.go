// Command multimodule is the MultiModule daemon and its companion commands.
// Run `multimodule --help` for the list.
package main

import (
	"os"

	"github.com/multimodule/multimodule"
	_ "github.com/multimodule/multimodule/examples/testtasks" // the MultiModuleTest namespace
	_ "github.com/multimodule/multimodule/tasks"              // built-in tasks
)

func main() { os.Exit(multimodule.Main()) }
