package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// transportDir returns the embedded bus' directory: -T, or <state>/transit.
func transportDir(g *Globals) string {
	if g.TransportDir != "" {
		return g.TransportDir
	}
	state := g.StateDir
	if state == "" {
		state = DefaultStateDir
	}
	return filepath.Join(state, "transit")
}

// natsOptions builds the NATS connection options of the --nats-* flags.
func natsOptions(g *Globals) ([]nats.Option, error) {
	var opts []nats.Option
	if g.NATSURL == "" {
		if g.NATSCreds != "" || g.NATSCA != "" || g.NATSCert != "" || g.NATSKey != "" {
			return nil, errors.New("--nats-creds, --nats-ca, --nats-cert and --nats-key need --nats URL (the embedded bus uses its own token)")
		}
		return nil, nil
	}
	if g.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(g.NATSCreds))
	}
	if g.NATSCA != "" {
		opts = append(opts, nats.RootCAs(g.NATSCA))
	}
	if (g.NATSCert == "") != (g.NATSKey == "") {
		return nil, errors.New("--nats-cert and --nats-key go together")
	}
	if g.NATSCert != "" {
		opts = append(opts, nats.ClientCert(g.NATSCert, g.NATSKey))
	}
	return opts, nil
}

// transitOptions turns the global flags into transit.Options (Logger
// left nil for the caller to set).
func transitOptions(g *Globals) (transit.Options, error) {
	nopts, err := natsOptions(g)
	if err != nil {
		return transit.Options{}, err
	}
	var capacity transit.Capacity
	if g.BusMaxBytes != "" {
		if capacity.Bytes, err = parseBytes(g.BusMaxBytes); err != nil {
			return transit.Options{}, fmt.Errorf("--bus-max-bytes: %w", err)
		}
		if capacity.Bytes < transit.MinStreamBytes {
			return transit.Options{}, fmt.Errorf("--bus-max-bytes %s: at least %d MiB", g.BusMaxBytes, transit.MinStreamBytes>>20)
		}
	}
	if g.BusReplicas < 1 || g.BusReplicas > transit.MaxReplicas {
		return transit.Options{}, fmt.Errorf("--bus-replicas %d: between 1 and %d", g.BusReplicas, transit.MaxReplicas)
	}
	if g.BusReplicas > 1 && g.NATSURL == "" {
		return transit.Options{}, fmt.Errorf("--bus-replicas %d needs --nats: the embedded bus is a single server; replicas live on the servers of a NATS cluster (see docs/cluster.md)", g.BusReplicas)
	}
	return transit.Options{
		StateDir:     g.StateDir,
		TransportDir: transportDir(g),
		NATSURL:      g.NATSURL,
		NATSOptions:  nopts,
		Host:         g.Host,
		Capacity:     capacity,
		Replicas:     g.BusReplicas,
	}, nil
}

// parseBytes reads a size: a number of bytes, or a number with a binary
// unit (K, M, G, T, optionally followed by "iB" or "B": 512M, 4GiB).
func parseBytes(s string) (int64, error) {
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(s[len(num):])
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n <= 0 || n > math.MaxInt64>>sh {
		return 0, fmt.Errorf("invalid size %q (want a number of bytes, or with a unit: 512MiB, 4GiB)", s)
	}
	return n << sh, nil
}

// openTransit opens the queues the way every companion command does: the
// embedded bus under the transport dir (started when needed), or --nats.
func openTransit(ctx context.Context, g *Globals) (*transit.Transit, error) {
	if err := checkDaemonBus(g); err != nil {
		return nil, err
	}
	opts, err := transitOptions(g)
	if err != nil {
		return nil, err
	}
	opts.Logger = cliLogger()
	return transit.Open(ctx, opts)
}

// cliLogger logs warnings and errors to stderr: companion commands keep
// stdout for their output.
func cliLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// stateDir returns -s, or the default.
func stateDir(g *Globals) string {
	if g.StateDir == "" {
		return DefaultStateDir
	}
	return g.StateDir
}

// ExitNoBus is the exit status of a command that found no daemon and no
// bus to talk to (the same as ExitNoDaemon: nothing answers).
const ExitNoBus = ExitNoDaemon

// noBusError is what a command that must not start a bus says when none
// runs.
func noBusError(g *Globals) error {
	s := stateDir(g)
	where := "under " + s
	if g.TransportDir != "" {
		where = "under " + s + " (bus in " + g.TransportDir + ")"
	}
	msg := fmt.Sprintf("no daemon and no bus %s (start one with multimodule -s %s …)", where, s)
	if d, ok := runningDaemon(g); ok {
		msg = fmt.Sprintf("no bus %s; the daemon (pid %d) starts it again when it reconnects: try again", where, d.PID)
	}
	return &ExitError{Code: ExitNoBus, Err: errors.New(msg)}
}

// runningDaemon returns the status of the daemon of the state directory,
// if one runs. It never creates the state directory.
func runningDaemon(g *Globals) (store.Status, bool) {
	st, err := openExistingStore(g)
	if st == nil || err != nil {
		return store.Status{}, false
	}
	m, err := st.LoadStatus("main")
	if err != nil || m == nil || !m.Running() {
		return store.Status{}, false
	}
	return *m, true
}

// openExistingStore opens the state directory if it exists (store.Open
// would create it): nil, nil when it does not exist.
func openExistingStore(g *Globals) (*store.Store, error) {
	if _, err := os.Stat(stateDir(g)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return store.Open(stateDir(g))
}

// checkDaemonBus refuses to use the embedded bus when the daemon of this
// state directory uses a NATS server: a command there would talk to
// another bus than the daemon's.
func checkDaemonBus(g *Globals) error {
	if g.NATSURL != "" {
		return nil
	}
	d, ok := runningDaemon(g)
	if !ok || d.NATS == "" {
		return nil
	}
	return &ExitError{Code: ExitNoBus, Err: fmt.Errorf(
		"the daemon of %s (pid %d) uses the NATS server %s, not the embedded bus: give --nats %s (or set MULTIMODULE_NATS), with its --nats-creds/--nats-ca if it needs them",
		stateDir(g), d.PID, d.NATS, d.NATS)}
}

// openLookingTransit is openExistingTransit for a command that only
// looks (status, queues): the host scope (--host) must exist on the bus
// too; looking at a host creates none.
func openLookingTransit(ctx context.Context, g *Globals) (*transit.Transit, error) {
	return openExisting(ctx, g, true)
}

// openExistingTransit opens the queues for a command that only looks or
// takes (status, queues, recv): with no --nats, the embedded bus must
// already run; none is started and no directory is created.
func openExistingTransit(ctx context.Context, g *Globals) (*transit.Transit, error) {
	return openExisting(ctx, g, false)
}

func openExisting(ctx context.Context, g *Globals, noCreate bool) (*transit.Transit, error) {
	if err := checkDaemonBus(g); err != nil {
		return nil, err
	}
	opts, err := transitOptions(g)
	if err != nil {
		return nil, err
	}
	opts.Logger = cliLogger()
	opts.NoCreate = noCreate
	if g.NATSURL == "" {
		if _, err := os.Stat(opts.TransportDir); err != nil {
			return nil, noBusError(g)
		}
		opts.NoStartBus = true
	}
	tr, err := transit.Open(ctx, opts)
	if errors.Is(err, transit.ErrNoBus) {
		return nil, noBusError(g)
	}
	return tr, err
}

// openFor is the prologue of the commands that move messages (send,
// recv): the deadline of --timeout (none when 0) around the whole command,
// then the queues opened with open. done closes the queues and releases
// the deadline; the returned ctx carries it.
func openFor(ctx context.Context, g *Globals, timeout time.Duration, open func(context.Context, *Globals) (*transit.Transit, error)) (context.Context, *transit.Transit, func(), error) {
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	t, err := open(ctx, g)
	if err != nil {
		cancel()
		return ctx, nil, nil, err
	}
	return ctx, t, func() { t.Close(); cancel() }, nil
}
