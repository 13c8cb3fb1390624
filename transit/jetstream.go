package transit

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream returns the JetStream handle of the bus connection, for
// packages that keep their own JetStream state on the same bus (the
// cluster placement's key-value buckets). The handle lives as long as
// the Transit: stop using it before Close. Message delivery does not go
// through it; it is not for queues (use the Transit's API for those).
// It fails on a closed Transit.
func (t *Transit) JetStream() (jetstream.JetStream, error) {
	if t.closed.Load() {
		return nil, errors.New("transit: jetstream: the transit is closed")
	}
	b, ok := t.bus.(*natsBus)
	if !ok || b.js == nil {
		return nil, errors.New("transit: jetstream: the bus has no JetStream")
	}
	return b.js, nil
}

// Replicas is how many servers keep a copy of this box's streams (the
// Replicas option, 1 when not given): the count other JetStream state
// of the box (the placement buckets) is created with.
func (t *Transit) Replicas() int { return t.opts.Replicas }
