package transit

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// queueDeleter is an optional ability of a backend: removing a queue.
type queueDeleter interface {
	deleteQueue(ctx context.Context, scope, qname string) error
}

// DeleteQueue removes bus queue qname of this box's host scope and every
// message in it. It is for short-lived queues a process made for itself
// (the queue a `multimodule` command waits on for the daemon's verdict),
// so that they do not pile up on the bus. A queue that does not exist is
// not an error.
func (t *Transit) DeleteQueue(ctx context.Context, qname string) error {
	if err := ValidateQueueName(qname); err != nil {
		return err
	}
	if t.closed.Load() {
		return fmt.Errorf("transit: delete queue %q: %w", qname, ErrClosed)
	}
	d, ok := t.bus.(queueDeleter)
	if !ok {
		return fmt.Errorf("transit: delete queue %q: not supported by this transport", qname)
	}
	return d.deleteQueue(ctx, t.host, qname)
}

func (b *natsBus) deleteQueue(ctx context.Context, scope, qname string) error {
	s, err := b.stream(ctx, scope)
	if err != nil {
		return err
	}
	key := scope + "\x00" + qname
	b.mu.Lock()
	delete(b.queues, key)
	delete(b.recv, key)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if err := s.DeleteConsumer(ctx, consumerName(qname)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("transit: delete queue %q: %w", qname, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(b.subject(scope, qname))); err != nil {
		return fmt.Errorf("transit: delete queue %q: purge: %w", qname, err)
	}
	return nil
}
