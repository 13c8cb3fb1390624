// Command multimodule is the MultiModule daemon and its companion commands.
// Run `multimodule --help` for the list.
package main

import (
	"os"

	"github.com/multimodule/multimodule"
)

func main() { os.Exit(multimodule.Main()) }
