package transit

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A host scope's stream keeps a message only while some consumer is
// interested in its subject (interest retention), and each node of a
// replicated stream decides that on its own, from the consumers it has
// set up itself, when it stores the message: the leader drops a message
// for which it knows no consumer, acknowledging it all the same, and a
// follower that learns of the consumer late leaves the message out of its
// copy, which is lost if that node leads later. The bus confirms a new
// consumer (to its creator, and as existing to anyone else) as soon as a
// majority of its nodes have it, so a queue's first messages, sent right
// after, could vanish while one node was slow. A queue's consumer is
// therefore used only once every node that keeps the stream has it, or
// after a short wait when one does not get it (a node that is down).

// consumerSetUpWait bounds waitConsumerSetUp. A new consumer is set up
// on every live node within milliseconds; a node that does not have it
// after this is down or stopped (the stream's leader counts a silent
// node as current for 10 s after it last heard from it), and waiting
// longer would hold up every first send to a new queue while a node is
// down.
const consumerSetUpWait = 3 * time.Second

// consumerLookTimeout bounds one look of waitConsumerSetUp (the stream's
// and the consumer's info).
const consumerLookTimeout = time.Second

// waitConsumerSetUp returns once every node that is a current member of
// stream s (its leader and the followers the leader counts as current)
// runs consumer c, as the consumer's leader or a current member of the
// consumer's group, or once consumerSetUpWait has passed (logged: a node
// is down, or very slow). A stream with one replica returns at once.
func waitConsumerSetUp(ctx context.Context, s jetstream.Stream, c jetstream.Consumer, log *slog.Logger) error {
	if s.CachedInfo().Config.Replicas <= 1 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, consumerSetUpWait)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		// Each look is bounded on its own: a consumer the bus has just
		// confirmed may have no leader to answer for a moment, and a
		// request nobody answers would wait out the whole bound.
		actx, acancel := context.WithTimeout(wctx, consumerLookTimeout)
		missing, err := consumerMissingOn(actx, s, c)
		acancel()
		if err == nil && len(missing) == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("not yet set up on node(s) %s of the stream", strings.Join(missing, ", "))
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("transit: bus consumer %s: %w (%w)", c.CachedInfo().Name, err, ctx.Err())
			}
			log.Warn("using a new queue before every node of its stream has it (a node down or slow may drop its first messages)",
				"consumer", c.CachedInfo().Name, "waited", consumerSetUpWait, "why", err)
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// consumerMissingOn names the current members of stream s that do not
// run consumer c yet.
func consumerMissingOn(ctx context.Context, s jetstream.Stream, c jetstream.Consumer) ([]string, error) {
	si, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer info: %w", err)
	}
	if si.Cluster == nil || si.Cluster.Leader == "" {
		return nil, fmt.Errorf("stream %s has no leader", si.Config.Name)
	}
	if ci.Cluster == nil || ci.Cluster.Leader == "" {
		return nil, fmt.Errorf("consumer has no leader")
	}
	running := []string{ci.Cluster.Leader}
	for _, r := range ci.Cluster.Replicas {
		if r.Current {
			running = append(running, r.Name)
		}
	}
	var missing []string
	need := func(name string) {
		if !slices.Contains(running, name) {
			missing = append(missing, name)
		}
	}
	need(si.Cluster.Leader)
	for _, r := range si.Cluster.Replicas {
		if r.Current {
			need(r.Name)
		}
	}
	return missing, nil
}
