package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/transit"
)

// BusIdleEnv sets the default of `bus --idle-exit`; a bus started on
// first use inherits it from the process that starts it.
const BusIdleEnv = "MULTIMODULE_BUS_IDLE_EXIT"

// DefaultBusIdleExit is how long an embedded bus with no client and no
// message runs before it exits by itself.
const DefaultBusIdleExit = 10 * time.Minute

// busIdleDefault is --idle-exit's default: $MULTIMODULE_BUS_IDLE_EXIT or
// DefaultBusIdleExit.
func busIdleDefault() time.Duration {
	if v := os.Getenv(BusIdleEnv); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			return d
		}
	}
	return DefaultBusIdleExit
}

func newBusCommand(g *Globals) *cobra.Command {
	var idle time.Duration
	cmd := &cobra.Command{
		Use:   "bus",
		Short: "Run the embedded message bus (NATS JetStream) in the foreground; bus stop stops it",
		Long: `bus runs the embedded NATS JetStream server that carries the queues of one
box. It stores messages under the transport directory (-T, default
<state>/transit), listens on 127.0.0.1 on a random port and requires a
random token. Once ready it writes bus.json (url, pid, start time) and
token (mode 0600) there; on SIGTERM or Ctrl-C it stops cleanly.

You rarely run it yourself: the daemon, send, and the commands that ask
the daemon something (config apply, failsafe, unfailsafe) start it
(detached, logging to bus.log) when it is not running; status, queues and
recv never do. With --nats there is no embedded bus.

The bus stops by itself when its transport directory is removed, and
after --idle-exit with no client connected and no message stored (a bus
holding messages waits for them to be taken). "multimodule bus stop"
stops it now, unless a client still uses it.`,
		Example: `  multimodule bus -s ./state
  multimodule bus -T /var/lib/multimodule/transit --idle-exit 0
  multimodule bus stop -s ./state`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.NATSURL != "" {
				return errors.New("bus: --nats (or MULTIMODULE_NATS) names an external NATS server; there is no embedded bus to run")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			return transit.RunBus(cmd.Context(), transportDir(g), transit.BusOptions{IdleExit: idle, Logger: log})
		},
	}
	cmd.Flags().DurationVar(&idle, "idle-exit", busIdleDefault(), "exit after this long with no client and no stored message (0: never; default from $"+BusIdleEnv+")")
	cmd.AddCommand(newBusStopCommand(g))
	return cmd
}

func newBusStopCommand(g *Globals) *cobra.Command {
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the embedded bus of a state directory, unless a client still uses it",
		Long: `bus stop asks the embedded bus under the transport directory (-T, default
<state>/transit) to stop and waits until its process has exited. The bus
keeps every message on disk; the next command that needs it starts it
again with the same queues.

A bus that other clients use (a daemon, an external task, a waiting recv)
is left running: the exit status is 1 and the message says how many
clients are connected. Stop the daemon first ("multimodule stop" stops
the daemon, its externals and the bus, in that order), or give --force
(a running daemon then starts a new bus when it reconnects).

With no bus running it says so and exits 0.`,
		Example: `  multimodule bus stop -s ./state
  multimodule bus stop -T /var/lib/multimodule/transit --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.NATSURL != "" {
				return errors.New("bus stop: --nats (or MULTIMODULE_NATS) names an external NATS server; there is no embedded bus to stop")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return stopBus(ctx, g, force, cmd)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "stop the bus even when clients use it")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait for the bus to exit")
	return cmd
}

// stopBus stops the embedded bus and prints what it did.
func stopBus(ctx context.Context, g *Globals, force bool, cmd *cobra.Command) error {
	dir := transportDir(g)
	pid, err := transit.StopBus(ctx, dir, force)
	switch {
	case errors.Is(err, transit.ErrNoBus):
		fmt.Fprintf(cmd.OutOrStdout(), "bus: not running under %s\n", dir)
		return nil
	case errors.Is(err, transit.ErrBusInUse):
		return &ExitError{Code: 1, Err: fmt.Errorf("bus (pid %d) left running: %w (stop the daemon first with multimodule stop, or use --force)", pid, err)}
	case err != nil:
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "bus (pid %d): stopped\n", pid)
	return nil
}
