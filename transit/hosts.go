package transit

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Host is this Transit's host scope (Options.Host as a scope: '.'
// replaced by '_').
func (t *Transit) Host() string { return t.host }

// Hosts lists the host scopes that exist on the bus (a host's scope
// exists once a process of that host opened the bus), sorted. Each is a
// valid SendOptions.Destination.
func (t *Transit) Hosts(ctx context.Context) ([]string, error) {
	if t.closed.Load() {
		return nil, fmt.Errorf("transit: hosts: %w", ErrClosed)
	}
	return t.bus.hosts(ctx)
}

func (b *natsBus) hosts(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	names := b.js.StreamNames(ctx)
	var out []string
	for name := range names.Name() {
		if scope, ok := strings.CutPrefix(name, b.streamName("")); ok && scope != "" {
			out = append(out, scope)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("transit: list the host scopes on the bus: %w", err)
	}
	slices.Sort(out)
	return out, nil
}
