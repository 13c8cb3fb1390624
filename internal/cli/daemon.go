package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/multimodule/multimodule/internal/daemon"
)

// setupDaemon gives the root command the daemon's flags (kept from the
// original App::MultiModule) and makes it run the daemon.
func setupDaemon(root *cobra.Command, g *Globals) {
	var o daemon.Options
	f := root.Flags()
	f.StringVarP(&o.ControlQueue, "control-queue", "q", daemon.DefaultControlQueue, "control queue name")
	f.StringSliceVarP(&o.Sources, "tasks", "p", nil, "task sources searched after builtin, in order: compiled-in namespaces (MultiModuleTest) or directories of exec tasks (./tasks, /opt/tasks); repeat or comma-separate")
	f.StringVarP(&o.ConfigFile, "config", "c", "", "config file (YAML or JSON), watched and re-applied on change")
	f.IntVarP(&o.DebugLevel, "debug", "d", 0, "debug level (0: no debug output)")
	f.StringVarP(&o.Task, "module", "m", "", "run as the external process of this task (set by the daemon itself)")
	f.StringVarP(&o.OOB, "oob", "o", "", "out-of-band handling, channel:handling,... (1 stdout, 2 stderr, a path, router, or a queue)")
	f.StringVar(&o.HTTP, "http", "", "serve metrics, the JSON API and the dashboard on this address (a port alone is on 127.0.0.1; port 0 picks one, written to <state>/http.json); off by default")
	f.StringVar(&o.HTTPToken, "http-token", "", "file holding the token the HTTP actions need (default: the embedded bus' token file); required with a non-loopback --http")
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
		o.ExternalArgv, err = externalArgv(cmd)
		if err != nil {
			return err
		}
		return daemon.Run(cmd.Context(), o)
	}
}

// externalArgv is this program with the daemon's own options, for
// starting external task processes (the daemon adds -m <task>). The config
// file stays the daemon's own; -m is the daemon's to add.
func externalArgv(cmd *cobra.Command) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program for external tasks: %w", err)
	}
	argv := []string{exe}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "config", "module", "help", "http", "http-token": // the daemon's own
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				argv = append(argv, "--"+f.Name+"="+v)
			}
			return
		}
		argv = append(argv, "--"+f.Name+"="+f.Value.String())
	})
	return argv, nil
}
