package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

func newStopCommand(g *Globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop the daemon of a state directory, its external tasks and its bus, in that order",
		Long: `stop stops everything that runs for a state directory, in order, and
loses nothing:

  1. the daemon: it gets SIGINT (as Ctrl-C would), saves every task's
     state, stops its external task processes and exits; stop waits for
     that (--timeout);
  2. external task processes still running (left by a daemon that was
     killed): each gets SIGTERM, saves its state and exits;
  3. the embedded bus, unless another client still uses it (it keeps
     every message on disk either way). With --nats, or when the daemon
     used a NATS server, there is no embedded bus to stop.

It prints one line per step. Exit status: 0 when everything that ran is
stopped (a bus left running because another client uses it counts: it
says so); 1 when a process did not exit within --timeout (nothing after
it is stopped); 2 when the state directory does not exist.`,
		Example: `  multimodule stop -s ./state
  multimodule stop -s ./state --timeout 5m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return runStop(ctx, g, cmd.OutOrStdout())
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the daemon, the externals and the bus to exit")
	return cmd
}

func runStop(ctx context.Context, g *Globals, out io.Writer) error {
	st, err := openExistingStore(g)
	if err != nil {
		return err
	}
	if st == nil {
		if _, err := os.Stat(transportDir(g)); err != nil {
			return noBusError(g)
		}
	}
	usedNATS := daemon.RedactNATSURL(g.NATSURL)
	if st != nil {
		m, _ := st.LoadStatus("main")
		switch {
		case m != nil && m.Running():
			if m.NATS != "" && usedNATS == "" {
				usedNATS = m.NATS
			}
			if err := stopProcess(ctx, *m, syscall.SIGINT); err != nil {
				return fmt.Errorf("daemon (pid %d): %w; nothing else stopped", m.PID, err)
			}
			fmt.Fprintf(out, "daemon (pid %d): stopped\n", m.PID)
		default:
			fmt.Fprintf(out, "daemon: not running\n")
		}
		if err := stopExternals(ctx, st, out); err != nil {
			return err
		}
	}
	if usedNATS != "" {
		fmt.Fprintf(out, "bus: the NATS server %s, not stopped here\n", usedNATS)
		return nil
	}
	dir := transportDir(g)
	pid, err := transit.StopBus(ctx, dir, false)
	switch {
	case errors.Is(err, transit.ErrNoBus):
		fmt.Fprintf(out, "bus: not running\n")
	case errors.Is(err, transit.ErrBusInUse):
		fmt.Fprintf(out, "bus (pid %d): left running: another client uses it (%v)\n", pid, err)
	case err != nil:
		return fmt.Errorf("bus: %w", err)
	default:
		fmt.Fprintf(out, "bus (pid %d): stopped\n", pid)
	}
	return nil
}

// stopExternals stops every external task process that still runs.
func stopExternals(ctx context.Context, st *store.Store, out io.Writer) error {
	names, err := st.Tasks()
	if err != nil {
		return fmt.Errorf("externals: %w", err)
	}
	n := 0
	for _, name := range names {
		s, _ := st.LoadStatus(name)
		if name == "main" || s == nil || !s.External || !s.Running() {
			continue
		}
		if err := stopProcess(ctx, *s, syscall.SIGTERM); err != nil {
			return fmt.Errorf("external %s (pid %d): %w; the bus is not stopped", name, s.PID, err)
		}
		fmt.Fprintf(out, "external %s (pid %d): stopped\n", name, s.PID)
		n++
	}
	if n == 0 {
		fmt.Fprintf(out, "externals: none running\n")
	}
	return nil
}

// stopProcess sends sig to the process s names (if it is still that
// process) and waits until it has exited.
func stopProcess(ctx context.Context, s store.Status, sig syscall.Signal) error {
	if !s.Running() {
		return nil
	}
	if err := syscall.Kill(s.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("send %v: %w", sig, err)
	}
	delay := 10 * time.Millisecond
	for s.Running() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("did not exit after %v: %w", sig, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
	return nil
}
