package cluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
)

// chaosRate is the producer's rate in the chaos run, messages a second.
const chaosRate = 250

// chaosStop is how long a NATS node stays stopped (SIGSTOP) in the chaos
// run: longer than a lease (3 s), so that a box cut off with it loses
// its tasks.
const chaosStop = 5 * time.Second

// TestClusterChaos: the Counter, placed on any box, counts what a steady
// producer on box1 sends through the Router while faults come in turn:
// the daemon of the box running the Counter and the NATS node it is
// connected to are killed with SIGKILL (the box is lost) and started
// again; the NATS node leading the placed tasks' stream is killed with
// SIGKILL and started again; the NATS node of the box running the
// Counter is stopped (SIGSTOP, the stand-in for a network partition) for
// longer than a lease, then continued. At the end nothing the bus
// accepted is lost and the Counter's state counts every message exactly
// once. One round of the three faults by default (the CI run); with
// MM_CLUSTER_CHAOS_DURATION (say 10m) the rounds repeat until it has
// passed.
func TestClusterChaos(t *testing.T) {
	var dur time.Duration // one round
	if os.Getenv("MM_CLUSTER_CHAOS_DURATION") != "" {
		dur = envDuration(t, "MM_CLUSTER_CHAOS_DURATION", 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	w := newCLWorld(ctx, t, map[string]any{"placement": map[string]any{"any": true}})
	p := newProducer(t, w)
	stop := p.start(ctx, chaosRate)
	defer stop()
	w.rx.waitFor(t, 90*time.Second, "the first 100 messages counted", func(got []countMsg) bool { return len(w.rx.first) >= 100 })

	var faults []fault
	start := time.Now()
	kinds := []func(*clWorld, *producer) fault{chaosKillBox, chaosKillNode, chaosStopNode}
	for i := 0; i < len(kinds) || time.Since(start) < dur; i++ {
		faults = append(faults, kinds[i%len(kinds)](w, p))
	}
	stop()
	res := w.checkExactlyOnce(p, true, faults)
	t.Logf("chaos: %d faults in %v; %d messages sent at %d/s, %d accepted by the bus, %d sends failed, %d counted, final count %d, %d counts received twice (around a take-over or a node's death)",
		len(faults), time.Since(start).Round(time.Second), res.Sent, chaosRate, res.Accepted, res.Failed, res.Counted, res.FinalCount, res.Duplicates)
}

// holder is the box running the Counter now: the one whose daemon
// counted the last count received.
func (w *clWorld) holder() string {
	w.t.Helper()
	var h string
	mmtest.Eventually(w.t, 30*time.Second, func() error {
		if h = w.boxOf(w.rx.lastPid()); h == "" {
			return fmt.Errorf("the last count came from pid %d, no running box's daemon", w.rx.lastPid())
		}
		return nil
	})
	return h
}

// leaveEntry makes the producer send to a box other than host, and
// waits until every message it sent so far was counted: host's Router
// then has none of the producer's messages in hand when host dies.
func (w *clWorld) leaveEntry(p *producer, host string) {
	w.t.Helper()
	for _, h := range clHosts {
		if h != host {
			p.entry.Store(h)
			break
		}
	}
	acc, _ := p.acceptedSeqs()
	w.rx.waitSeqs(w.t, acc, 60*time.Second)
}

// backAtRateWait is how long a fault's recovery is watched for the
// pipeline back at the offered rate after its first new count: a
// measurement only, so that a loaded machine does not stretch the run.
const backAtRateWait = 20 * time.Second

// recoverFrom logs and returns how long after t0 the pipeline counted a
// message sent after t0, and when it was back at the offered rate.
func (w *clWorld) recoverFrom(p *producer, rate int, what string, t0 time.Time, limit time.Duration) (firstNew, back time.Time) {
	w.t.Helper()
	m := w.rx.firstAfter(w.t, t0, 120*time.Second, "a message sent after "+what+" counted", func(m countMsg) bool {
		return p.sentTime(m.seq).After(t0)
	})
	back, ok := w.rx.recovered(p, m.at, 0, limit, backAtRateWait)
	if !ok {
		back = time.Now()
		w.t.Logf("%s: first message sent after it counted after %v (by %s), not back at %d/s (send → count within %v) %v after it (a measurement: the machine is too loaded for the rate)",
			what, m.at.Sub(t0).Round(time.Millisecond), w.boxOf(m.pid), rate, limit.Round(time.Millisecond), back.Sub(m.at).Round(time.Second))
		return m.at, back
	}
	w.t.Logf("%s: first message sent after it counted after %v (by %s), back at %d/s (send → count within %v) after %v",
		what, m.at.Sub(t0).Round(time.Millisecond), w.boxOf(m.pid), rate, limit.Round(time.Millisecond), back.Sub(t0).Round(time.Millisecond))
	return m.at, back
}

// chaosKillBox kills the daemon of the box running the Counter and its
// NATS node with SIGKILL, waits for another box to take the Counter
// over, and starts both again.
func chaosKillBox(w *clWorld, p *producer) fault {
	f, _, _ := w.loseBox(p, chaosRate)
	return f
}

// loseBox kills the daemon of the box running the Counter and the NATS
// node it is connected to with SIGKILL, waits for another box to take
// the Counter over and the pipeline to be back at rate, and starts both
// again. It returns the fault and how long after the kill the first
// count from another box and the pipeline back at rate came.
func (w *clWorld) loseBox(p *producer, rate int) (f fault, takeover, back time.Duration) {
	t := w.t
	t.Helper()
	host := w.holder()
	w.leaveEntry(p, host)
	nd := w.nodeOf(host)
	box := w.boxes[host]
	limit := w.rx.latencyLimit(p, time.Now(), 2*time.Second)
	old := box.Daemon.PID()
	leaders := w.leadersOn(nd.Name)
	t0 := time.Now()
	box.Daemon.Kill()
	nd.Kill()
	what := fmt.Sprintf("box %s lost (daemon pid %d and NATS node %s killed with SIGKILL; %s)", host, old, nd.Name, leaders)
	m := w.rx.firstAfter(t, t0, 120*time.Second, "a count from another box after "+what, func(m countMsg) bool { return m.pid != old })
	t.Logf("%s: take-over by %s: first count after %v", what, w.boxOf(m.pid), m.at.Sub(t0).Round(time.Millisecond))
	_, b := w.recoverFrom(p, rate, what, t0, limit)
	nd.Start()
	w.c.WaitReady(90 * time.Second)
	box.Daemon = box.StartDaemon(w.args[host]...)
	p.entry.Store("box1")
	_, b2 := w.recoverFrom(p, rate, fmt.Sprintf("box %s started again", host), time.Now(), limit)
	return fault{what: what, from: t0, to: b2.Add(10 * time.Second)}, m.at.Sub(t0), b.Sub(t0)
}

// chaosKillNode kills the NATS node leading the stream of the placed
// tasks' queues with SIGKILL and starts it again.
func chaosKillNode(w *clWorld, p *producer) fault {
	t := w.t
	t.Helper()
	leader := streamInfo(w.ctx, t, w.js, "_cluster").Cluster.Leader
	nd := w.nodeNamed(leader)
	limit := w.rx.latencyLimit(p, time.Now(), 2*time.Second)
	what := fmt.Sprintf("NATS node %s killed with SIGKILL (%s)", nd.Name, w.leadersOn(nd.Name))
	t0 := time.Now()
	nd.Kill()
	w.recoverFrom(p, chaosRate, what, t0, limit)
	nd.Start()
	w.c.WaitReady(90 * time.Second)
	_, back := w.recoverFrom(p, chaosRate, fmt.Sprintf("NATS node %s started again", nd.Name), time.Now(), limit)
	return fault{what: what, from: t0, to: back.Add(10 * time.Second)}
}

// chaosStopNode stops the NATS node of the box running the Counter
// (SIGSTOP) for chaosStop, then continues it (SIGCONT): the box, its
// clients and the other nodes see the node go silent, as in a network
// partition, not a closed connection.
func chaosStopNode(w *clWorld, p *producer) fault {
	t := w.t
	t.Helper()
	host := w.holder()
	nd := w.nodeOf(host)
	proc := nd.Proc()
	limit := w.rx.latencyLimit(p, time.Now(), 2*time.Second)
	t.Cleanup(func() { _ = proc.Signal(syscall.SIGCONT) })
	led := w.leadersOn(nd.Name)
	t0 := time.Now()
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP NATS node %s: %v", nd.Name, err)
	}
	what := fmt.Sprintf("NATS node %s (%s's server; %s) stopped with SIGSTOP for %v", nd.Name, host, led, chaosStop)
	stopped := time.After(chaosStop)
	<-stopped // the length of the partition, not a synchronisation
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT NATS node %s: %v", nd.Name, err)
	}
	_, back := w.recoverFrom(p, chaosRate, what, t0, limit)
	w.c.WaitReady(90 * time.Second)
	return fault{what: what, from: t0, to: back.Add(10 * time.Second)}
}

// nodeNamed is the node called name.
func (w *clWorld) nodeNamed(name string) *mmtest.Node {
	w.t.Helper()
	return nodeNamed(w.t, w.c, name)
}

// leadersOn names the streams (a key-value bucket is a stream KV_<name>)
// whose leader is node name: what a kill of it makes the cluster elect
// again.
func (w *clWorld) leadersOn(name string) string {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	var led []string
	for s := range w.js.ListStreams(ctx).Info() {
		if s.Cluster != nil && s.Cluster.Leader == name {
			led = append(led, s.Config.Name)
		}
	}
	if len(led) == 0 {
		return "it led no stream"
	}
	slices.Sort(led)
	return "it led " + strings.Join(led, ", ")
}
