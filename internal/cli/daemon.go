package cli

import (
	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/daemon"
)

func init() { daemonCommand = setupDaemon }

// setupDaemon gives the root command the daemon's flags (kept from the
// original App::MultiModule) and makes it run the daemon.
func setupDaemon(root *cobra.Command, g *Globals) {
	var o daemon.Options
	f := root.Flags()
	f.StringVarP(&o.ControlQueue, "control-queue", "q", daemon.DefaultControlQueue, "control queue name")
	f.StringSliceVarP(&o.Sources, "tasks", "p", nil, "task sources searched after builtin, in order: namespaces (MultiModuleTest) or, later, directories of exec tasks; repeat or comma-separate")
	f.StringVarP(&o.ConfigFile, "config", "c", "", "config file (YAML or JSON), watched and re-applied on change")
	f.IntVarP(&o.DebugLevel, "debug", "d", 0, "debug level (0: no debug output)")
	f.StringVarP(&o.Task, "module", "m", "", "run as the external process of this task (set by the daemon itself)")
	f.StringVarP(&o.OOB, "oob", "o", "", "out-of-band handling, channel:handling,... (1 stdout, 2 stderr, a path, router, or a queue)")
	root.Example = `  # the tutorial
  multimodule -p MultiModuleTest -c examples/tutorial.yaml -s ./state

  # change config while it runs
  multimodule send MultiModule_control '{".multimodule":{"config":{"Example1":{"outstr":"hi"}}}}'`
	root.Args = cobra.NoArgs
	root.RunE = func(cmd *cobra.Command, args []string) error {
		o.StateDir = g.StateDir
		o.Stdout = cmd.OutOrStdout()
		o.Stderr = cmd.ErrOrStderr()
		topts, err := transitOptions(g)
		if err != nil {
			return err
		}
		o.Transit = topts
		return daemon.Run(cmd.Context(), o)
	}
}
