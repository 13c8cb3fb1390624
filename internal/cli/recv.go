package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

type recvOptions struct {
	queue    string
	nonBlock bool
	count    int
	timeout  time.Duration
	follow   bool
}

func newRecvCommand(g *Globals) *cobra.Command {
	o := &recvOptions{}
	cmd := &cobra.Command{
		Use:   "recv QUEUE",
		Short: "Receive messages from a queue and print them as JSON lines",
		Long: `recv takes messages off queue QUEUE of the bus and prints each as one line
of JSON on standard output. Every printed message is removed from the
queue; the rest of the queue keeps its order.

By default it waits for one message. --count N takes N, --follow keeps
taking until interrupted (or --timeout). --nonblock takes only what is
waiting now. The exit status is 1 when fewer messages than asked for were
received (none for --nonblock and --follow).

recv never starts the bus and never creates the state directory: with
no bus running there is no message to take, and it exits with status 2
("no daemon and no bus under ./state"). Start the daemon (or send a
message, which starts the bus) first.

Read the dead-letter queue with: multimodule recv MultiModule_dead_letter`,
		Example: `  multimodule recv Example2
  multimodule recv --nonblock --count 100 MyQueue
  multimodule recv --follow MyQueue | jq .
  multimodule recv --timeout 5s --count 3 MyQueue`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.queue = args[0]
			return runRecv(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.nonBlock, "nonblock", false, "do not wait: take only messages already waiting")
	f.IntVarP(&o.count, "count", "n", 1, "number of messages to take")
	f.DurationVar(&o.timeout, "timeout", 0, "stop waiting after this long (0: no limit)")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep receiving until interrupted")
	return cmd
}

// recvShort says that fewer messages than asked for came: "no message
// within 5s", or, when interrupted, before what.
// err is how the last receive ended; it stands in for ctx's cause when
// ctx has none.
func recvShort(ctx context.Context, o *recvOptions, got int, err error) error {
	why := context.Cause(ctx)
	if why == nil {
		why = err
	}
	when := "before " + why.Error()
	if o.timeout > 0 && errors.Is(why, context.DeadlineExceeded) {
		when = "within " + o.timeout.String()
	}
	if got == 0 {
		return fmt.Errorf("recv: no message %s in queue %q", when, o.queue)
	}
	return fmt.Errorf("recv: only %d of %d messages %s in queue %q", got, o.count, when, o.queue)
}

func runRecv(ctx context.Context, g *Globals, o *recvOptions, stdout io.Writer) error {
	if err := transit.ValidateQueueName(o.queue); err != nil {
		return err
	}
	if o.count < 1 && !o.follow {
		return fmt.Errorf("recv: --count must be at least 1, got %d", o.count)
	}
	ctx, t, done, err := openFor(ctx, g, o.timeout, openExistingTransit)
	if err != nil {
		return err
	}
	defer done()
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	got := 0
	for o.follow || got < o.count {
		var m message.Message
		if o.nonBlock {
			m, err = t.TryReceive(ctx, o.queue)
		} else {
			m, err = t.Receive(ctx, o.queue)
		}
		if err != nil {
			break
		}
		if err := message.Encode(w, m); err != nil {
			return fmt.Errorf("recv: print message: %w", err)
		}
		got++
		if o.follow || o.nonBlock {
			// Show messages as they come; batch only when draining.
			if o.follow {
				if err := w.Flush(); err != nil {
					return fmt.Errorf("recv: %w", err)
				}
			}
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, transit.ErrEmpty):
		if got == 0 {
			return &ExitError{Code: 1, Err: fmt.Errorf("recv: queue %q is empty", o.queue)}
		}
		return nil
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		if o.follow && got > 0 {
			return nil
		}
		if o.follow || got < o.count {
			return &ExitError{Code: 1, Err: recvShort(ctx, o, got, err)}
		}
		return nil
	default:
		return err
	}
}
