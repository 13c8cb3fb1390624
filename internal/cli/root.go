// Package cli builds the multimodule command line: the daemon (the root
// command, with the original App::MultiModule flags) and its companion
// subcommands. Each subcommand lives in its own file, with a constructor
// that NewRoot lists; a binary may add more (Main's extra commands: the
// stock binary adds `bench`).
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/version"
	"github.com/multimodule/multimodule/oob"
)

// Globals are the options every command shares.
type Globals struct {
	StateDir     string // -s: the state directory
	TransportDir string // -T: the bus' storage; default <state>/transit
	NATSURL      string // --nats: use this NATS server/cluster instead of the embedded bus
	NATSCreds    string // --nats-creds: NATS credentials file
	NATSCA       string // --nats-ca: CA bundle for TLS to NATS
	NATSCert     string // --nats-cert: client certificate for TLS to NATS
	NATSKey      string // --nats-key: client key for TLS to NATS
	Host         string // --host: this box's host scope on the bus
	BusMaxBytes  string // --bus-max-bytes: storage of a host scope's queues created by this process
	BusReplicas  int    // --bus-replicas: copies of a host scope's queues created by this process (with --nats)
}

// DefaultStateDir is the state directory when -s is not given.
const DefaultStateDir = "./state"

// A Command builds one subcommand, with the options every command shares.
type Command func(*Globals) *cobra.Command

// NewRoot returns the root command (the daemon) with every subcommand
// added, extra ones last.
func NewRoot(extra ...Command) *cobra.Command {
	g := &Globals{}
	root := &cobra.Command{
		Use:   "multimodule",
		Short: "Run many small message-handling tasks, routed by content, supervised and monitored",
		Long: `multimodule runs the MultiModule daemon: it hosts tasks, routes their
messages through the Router task, keeps their state across crashes and
supervises external tasks. Its subcommands talk to queues and to a running
daemon.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version: the release, commit and toolchain (internal/version).
		Version: version.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}")
	root.Flags().SortFlags = false
	pf := root.PersistentFlags()
	pf.StringVarP(&g.StateDir, "state", "s", DefaultStateDir, "state directory")
	pf.StringVarP(&g.TransportDir, "transport", "T", "", "transport (bus storage) directory (default <state>/transit)")
	pf.StringVar(&g.NATSURL, "nats", os.Getenv("MULTIMODULE_NATS"), "NATS server URL(s); empty: the embedded bus under the transport dir")
	pf.StringVar(&g.NATSCreds, "nats-creds", "", "NATS credentials file (with --nats)")
	pf.StringVar(&g.NATSCA, "nats-ca", "", "CA certificate bundle for TLS to NATS (with --nats)")
	pf.StringVar(&g.NATSCert, "nats-cert", "", "client certificate for TLS to NATS (with --nats)")
	pf.StringVar(&g.NATSKey, "nats-key", "", "client key for TLS to NATS (with --nats)")
	pf.StringVar(&g.Host, "host", "", "this box's host scope on the bus (default: the hostname)")
	pf.StringVar(&g.BusMaxBytes, "bus-max-bytes", "", "storage for this host's queues on the bus, e.g. 512MiB or 4GiB, used when it is created (default: 8GiB, at most half the free space of the transport file system)")
	pf.IntVar(&g.BusReplicas, "bus-replicas", 1, "servers of the NATS cluster (--nats) that keep a copy of this host's queues, used when they are created: 3 survives the loss of one server")
	setupDaemon(root, g)
	for _, f := range append([]Command{
		newSendCommand, newRecvCommand, newQueuesCommand, newStatusCommand,
		newFailsafeCommand, newUnfailsafeCommand, newConfigCommand,
		newBusCommand, newStopCommand,
	}, extra...) {
		root.AddCommand(f(g))
	}
	return root
}

// ExitError carries a process exit code through cobra.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// SignalError is the cause of the command context's cancellation when a
// signal arrived; the daemon reads it (context.Cause) to tell SIGTERM
// (orderly exit) from SIGINT (exit with the externals).
type SignalError struct{ Signal os.Signal }

func (e *SignalError) Error() string { return "received " + e.Signal.String() }

// SignalValue returns the signal (the daemon looks for this method).
func (e *SignalError) SignalValue() os.Signal { return e.Signal }

// Main runs the command line with os.Args, with the extra commands
// added, and returns the exit code.
func Main(extra ...Command) int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			cancel(&SignalError{Signal: s})
		case <-ctx.Done():
		}
	}()
	return Run(ctx, os.Args[1:], extra...)
}

// Run runs the command line with args and returns the exit code.
func Run(ctx context.Context, args []string, extra ...Command) int {
	root := NewRoot(extra...)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	prio := "" // under systemd, the journal gives the line error priority
	if oob.IsJournal(os.Stderr) {
		prio = "<3>"
	}
	// Interrupted (Ctrl-C, SIGTERM) while starting or waiting: say that,
	// not what the interruption broke.
	var sig *SignalError
	if errors.As(context.Cause(ctx), &sig) && (errors.As(err, &sig) || errors.Is(err, context.Canceled)) {
		fmt.Fprintf(os.Stderr, "%smultimodule: interrupted (%v)\n", prio, sig.Signal)
		if s, ok := sig.Signal.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return 130
	}
	fmt.Fprintf(os.Stderr, "%smultimodule: %v\n", prio, err)
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var coder interface{ ExitCode() int }
	if errors.As(err, &coder) {
		return coder.ExitCode()
	}
	return 1
}
