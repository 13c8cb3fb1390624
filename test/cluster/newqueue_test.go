package cluster_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// followerHold is how long a stopped node stays stopped after the
// other nodes have set a new queue up: the length of the lag injected,
// not a synchronisation.
const followerHold = 500 * time.Millisecond

// The first message sent to a new queue is published only once every
// running node of the host scope's stream has the queue's consumer. Each
// node decides on its own whether it keeps a message (interest
// retention): one that learns of the consumer late drops the message, a
// leader at once (acknowledging it all the same), a follower from its
// copy, lost if that node leads later. The bus confirms the consumer as
// soon as a majority has it. A follower's node is stopped while the
// queue is set up: the send waits for it (up to a few seconds: then the
// node counts as down), and the message arrives once the node is
// continued.
func TestFirstSendToNewQueueWaitsForEveryNode(t *testing.T) {
	c := mmtest.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	box := c.NewBox(t, "box1")
	// The host scope's stream exists before the rounds.
	if err := box.Client().Send(ctx, "warm", message.Message{"warm": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	const stream = "MM_box1"
	for round := range 2 {
		q := fmt.Sprintf("fresh%d", round)
		leader, meta := streamAndMetaLeader(ctx, t, c, "box1")
		var follower *mmtest.Node
		for _, nd := range c.Nodes {
			if nd.Name != leader && nd.Name != meta {
				follower = nd
				break
			}
		}
		// The sender and the observer talk to the stream's leader.
		opts := box.Bus
		opts.NATSURL = nodeNamed(t, c, leader).URL()
		tr, err := transit.Open(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		js := nodeJS(t, nodeNamed(t, c, leader))

		proc := follower.Proc()
		t.Cleanup(func() { _ = proc.Signal(syscall.SIGCONT) })
		if err := proc.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		sent := make(chan error, 1)
		go func() {
			sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
			defer scancel()
			sent <- tr.Send(sctx, q, message.Message{"round": round}, transit.SendOptions{})
		}()
		// The nodes still running have the queue's consumer: the bus
		// confirms it to whoever asks.
		mmtest.Eventually(t, time.Minute, func() error {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			defer ccancel()
			cons, err := js.Consumer(cctx, stream, "q_"+q)
			if err != nil {
				return err
			}
			if ci := cons.CachedInfo(); ci.Cluster == nil || ci.Cluster.Leader == "" {
				return fmt.Errorf("consumer of %s has no leader yet", q)
			}
			return nil
		})
		hold := time.After(followerHold) // the lag injected: see followerHold
		select {
		case err := <-sent:
			t.Fatalf("round %d: the send to new queue %s returned (%v) while node %s, a member of its stream, did not have the queue yet",
				round, q, err, follower.Name)
		case <-hold:
		}
		if err := proc.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("round %d: send to %s: %v", round, q, err)
			}
		case <-ctx.Done():
			t.Fatalf("round %d: send to %s never returned", round, q)
		}
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := tr.Receive(rctx, q)
		rcancel()
		if err != nil {
			dumpBus(t, js)
			t.Fatalf("round %d: the first message sent to new queue %s never reached it: %v", round, q, err)
		}
		if got, _ := message.Int(m["round"]); got != int64(round) {
			t.Fatalf("round %d: queue %s gave %v", round, q, m)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		c.WaitReady(90 * time.Second)
	}
}

// nodeNamed is the node of c called name.
func nodeNamed(t *testing.T, c *mmtest.Cluster, name string) *mmtest.Node {
	t.Helper()
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	t.Fatalf("no NATS node is called %q", name)
	return nil
}

// nodeJS is a JetStream client of node nd alone.
func nodeJS(t *testing.T, nd *mmtest.Node) jetstream.JetStream { return jsAt(t, nd.URL()) }

// streamAndMetaLeader names the node leading stream and the JetStream
// meta leader.
func streamAndMetaLeader(ctx context.Context, t *testing.T, c *mmtest.Cluster, host string) (leader, meta string) {
	t.Helper()
	leader = streamInfo(ctx, t, rawJS(t, c), host).Cluster.Leader
	mmtest.Eventually(t, time.Minute, func() (err error) {
		meta, err = c.MetaLeader()
		return err
	})
	return leader, meta
}
