package cli

import (
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/transit"
)

func init() { register(newBusCommand) }

func newBusCommand(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "bus",
		Short: "Run the embedded message bus (NATS JetStream) in the foreground",
		Long: `bus runs the embedded NATS JetStream server that carries the queues of one
box. It stores messages under the transport directory (-T, default
<state>/transit), listens on 127.0.0.1 on a random port and requires a
random token. Once ready it writes bus.json (url, pid, start time) and
token (mode 0600) there; on SIGTERM or Ctrl-C it stops cleanly.

You rarely run it yourself: the daemon and the send, recv and queues
commands start it (detached, logging to bus.log) when it is not running.
With --nats there is no embedded bus.`,
		Example: `  multimodule bus -s ./state
  multimodule bus -T /var/lib/multimodule/transit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.NATSURL != "" {
				return errors.New("bus: --nats (or MULTIMODULE_NATS) names an external NATS server; there is no embedded bus to run")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			return transit.RunBus(cmd.Context(), transportDir(g), log)
		},
	}
}
