// Command multimodule is the MultiModule daemon and its companion commands.
// Run `multimodule --help` for the list.
//
// It is the stock binary: the built-in tasks, the MultiModuleTest
// fixtures (the tutorial's tasks) and the `bench` command. A binary of
// your own tasks is the same few lines with multimodule.Main and your
// task packages (docs/tasks.md, examples/custom).
package main

import (
	"os"

	"github.com/multimodule/multimodule/internal/benchcmd"
	"github.com/multimodule/multimodule/internal/cli"

	_ "github.com/multimodule/multimodule/examples/testtasks" // the MultiModuleTest namespace
	_ "github.com/multimodule/multimodule/tasks"              // built-in tasks
)

func main() { os.Exit(cli.Main(benchcmd.New)) }
