// Command mymultimodule is a MultiModule binary with one task of its own
// (MyTasks::Greeter) compiled in beside the built-in tasks. It is the
// template for shipping your own Go tasks: import your task packages for
// their registration and call multimodule.Main. docs/tasks.md explains the
// go.mod it needs.
package main

import (
	"os"

	"github.com/multimodule/multimodule"
	_ "github.com/multimodule/multimodule/tasks" // the built-in tasks: Router and the rest

	_ "example.com/mytasks/greeter" // MyTasks::Greeter
)

func main() { os.Exit(multimodule.Main()) }
