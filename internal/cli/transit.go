package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

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
	return transit.Options{
		StateDir:     g.StateDir,
		TransportDir: transportDir(g),
		NATSURL:      g.NATSURL,
		NATSOptions:  nopts,
		Host:         g.Host,
		Capacity:     capacity,
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
