// Package cluster runs MultiModule on a real three-node NATS cluster:
// three nats-server processes (mmtest.NewCluster), JetStream clustered,
// every host scope's stream replicated three times, and three daemons as
// the boxes box1, box2 and box3, each with its own state directory. It
// checks that a message sent on box1 to a task on box2 arrives, that
// messages keep flowing with nothing lost when one NATS node is killed
// with SIGKILL, and what the command line says across boxes.
package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	_ "github.com/multimodule/multimodule/examples/testtasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// out is the queue on box2 the pipeline ends in.
const out = "cluster_out"

// startBox writes cfg as box host's config file and starts its daemon.
func startBox(t *testing.T, c *mmtest.Cluster, host string, cfg map[string]any) *mmtest.Box {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), host+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return c.StartBox(t, host, "-p", "MultiModuleTest", "-c", path)
}

// route is a Router route: messages from task from go to forward.
func route(from string, forward map[string]any) any {
	return map[string]any{"match": map[string]any{"source": from}, "forwards": []any{forward}}
}

// world is three boxes on a three-node cluster: box1's OtherModule
// forwards (destination box2) to box2's OtherModule, whose output goes
// to cluster_out on box2, where rx collects it; box3 runs one task.
type world struct {
	t                *testing.T
	ctx              context.Context
	c                *mmtest.Cluster
	js               jetstream.JetStream
	box1, box2, box3 *mmtest.Box
	rx               *receiver
	recvDone         chan error
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, c: mmtest.NewCluster(t, 3)}
	w.box1 = startBox(t, w.c, "box1", map[string]any{
		"OtherModule": map[string]any{"increment_by": 1, "transform": map[string]any{"box1_pid": " specials/message.module_pid"}},
		"Router":      map[string]any{"routes": []any{route("OtherModule", map[string]any{"qname": "OtherModule", "destination": "box2"})}},
	})
	w.box2 = startBox(t, w.c, "box2", map[string]any{
		"OtherModule": map[string]any{"increment_by": 10},
		"Router":      map[string]any{"routes": []any{route("OtherModule", map[string]any{"qname": out})}},
	})
	w.box3 = startBox(t, w.c, "box3", map[string]any{
		"YetAnotherExternalModule": map[string]any{"increment_by": 100},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	t.Cleanup(cancel)
	w.ctx = ctx
	w.js = rawJS(t, w.c)
	t.Cleanup(func() {
		if t.Failed() {
			dumpBus(t, w.js)
			for _, b := range w.boxes() {
				t.Logf("%s daemon stdout:\n%s\nstderr:\n%s", b.Host, tail(b.Daemon.Stdout.String()), tail(b.Daemon.Stderr.String()))
			}
		}
	})
	for _, host := range []string{"box1", "box2", "box3"} {
		info := streamInfo(ctx, t, w.js, host)
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream of %s: %d replicas (cluster %+v), want 3", host, info.Config.Replicas, info.Cluster)
		}
	}
	// The receiver on box2 collects cluster_out from the start.
	w.rx = newReceiver()
	rctx, rcancel := context.WithCancel(ctx)
	t.Cleanup(rcancel)
	w.recvDone = make(chan error, 1)
	go func() { w.recvDone <- w.rx.run(rctx, t, w.box2.Client()) }()
	return w
}

func (w *world) boxes() []*mmtest.Box { return []*mmtest.Box{w.box1, w.box2, w.box3} }

// send sends seqs from..to-1 on box1.
func (w *world) send(from, to int) {
	for seq := from; seq < to; seq++ {
		sendRetrying(w.ctx, w.t, w.box1.Client(), seq)
	}
}

// TestThreeBoxes: every host scope's stream has three replicas; a
// message sent on box1 reaches the task on box2 it is forwarded to;
// `status --all-hosts` on box1 lists the tasks of every box with their
// box; `queues --host box2` on box1 lists box2's queues.
func TestThreeBoxes(t *testing.T) {
	w := newWorld(t)
	const n = 20
	w.send(0, n)
	w.rx.wait(t, n, 60*time.Second, w.recvDone)
	m := w.rx.first()
	if got := int(num(m["module_pid"])); got != w.box2.Daemon.PID() {
		t.Errorf("output handled by pid %d, want box2's daemon %d", got, w.box2.Daemon.PID())
	}
	if got := int(num(m["box1_pid"])); got != w.box1.Daemon.PID() {
		t.Errorf("output passed pid %d on box1, want box1's daemon %d", got, w.box1.Daemon.PID())
	}
	if my, ct := num(m["my_ct"]), num(m["ct"]); my != ct+10 {
		t.Errorf("my_ct %v for ct %v: want box2's increment (10)", my, ct)
	}
	checkAllHosts(t, w.box1, map[string]int{
		"box1/OtherModule": w.box1.Daemon.PID(), "box1/Router": w.box1.Daemon.PID(),
		"box2/OtherModule": w.box2.Daemon.PID(), "box2/Router": w.box2.Daemon.PID(),
		"box3/YetAnotherExternalModule": w.box3.Daemon.PID(),
	})
	stdout, stderr, code := w.box1.Run("queues", "-a", "--host=box2")
	if code != 0 || !strings.Contains(stdout, "OtherModule") || !strings.Contains(stdout, out) || strings.Contains(stdout, "YetAnother") {
		t.Errorf("queues --host box2 on box1: exit %d, want box2's OtherModule and %s only; stdout:\n%s\nstderr:\n%s", code, out, stdout, stderr)
	}
}

// TestNodeLoss: while messages flow from box1 to box2, the NATS node
// box2's daemon is connected to is killed with SIGKILL; the two left
// keep the R3 streams going, box2's daemon reconnects to one of them,
// and every message arrives (some may come twice). The daemon's log of
// its reconnection does not show the token of the NATS URL.
func TestNodeLoss(t *testing.T) {
	w := newWorld(t)
	const before, total = 20, 60
	w.send(0, before)
	w.rx.wait(t, before, 60*time.Second, w.recvDone)
	var victim *mmtest.Node
	mmtest.Eventually(t, 30*time.Second, func() error {
		for _, nd := range w.c.Nodes {
			names, err := nd.Clients()
			if err != nil {
				return err
			}
			if slices.Contains(names, "multimodule box2") {
				victim = nd
				return nil
			}
		}
		return errors.New("no node has box2's daemon as a client")
	})
	leader := streamInfo(w.ctx, t, w.js, "box2").Cluster.Leader
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.send(before, total) }()
	w.rx.wait(t, before+5, 60*time.Second, w.recvDone)
	t.Logf("killing NATS node %s (pid %d), box2's daemon's server; %s leads box2's stream", victim.Name, victim.Proc().PID(), leader)
	victim.Kill()
	mmtest.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(w.box2.Daemon.Stdout.String(), "bus connection restored") {
			return errors.New("box2's daemon has not logged its reconnection")
		}
		return nil
	})
	for _, b := range w.boxes() {
		if strings.Contains(b.Daemon.Stdout.String()+b.Daemon.Stderr.String(), w.c.Token) {
			t.Errorf("the log of %s's daemon shows the NATS token", b.Host)
		}
	}
	wg.Wait()
	w.rx.wait(t, total, 60*time.Second, w.recvDone)
	if dups := w.rx.dups(); dups > 0 {
		t.Logf("%d messages delivered twice (redelivered across the node's death)", dups)
	}
}

// checkAllHosts runs `status --all-hosts --json` on box b and checks that
// it lists every task of want ("host/task" → the pid of the daemon
// hosting it), running, and the host table too.
func checkAllHosts(t *testing.T, b *mmtest.Box, want map[string]int) {
	t.Helper()
	stdout, stderr, code := b.Run("status", "--all-hosts", "--json", "--wait=30s")
	if code != 0 {
		t.Fatalf("status --all-hosts: exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var lines []struct {
		Host    string `json:"host"`
		Task    string `json:"task"`
		PID     int    `json:"pid"`
		Running bool   `json:"running"`
	}
	if err := json.Unmarshal([]byte(stdout), &lines); err != nil {
		t.Fatalf("status --all-hosts --json: %v; stdout:\n%s", err, stdout)
	}
	got := map[string]int{}
	for _, l := range lines {
		if l.Running {
			got[l.Host+"/"+l.Task] = l.PID
		}
	}
	for k, pid := range want {
		if got[k] != pid {
			t.Errorf("status --all-hosts: %s runs as pid %d, want %d; stdout:\n%s", k, got[k], pid, stdout)
		}
	}
	stdout, stderr, code = b.Run("status", "--all-hosts", "--wait=30s")
	if code != 0 || !strings.Contains(stdout, "HOST") || !strings.Contains(stdout, "box3") {
		t.Errorf("status --all-hosts: exit %d, want a table with a HOST column naming box3; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// sendRetrying sends {ct: seq, seq} to OtherModule until the bus takes
// it (a send may fail while the cluster elects a new leader).
func sendRetrying(ctx context.Context, t *testing.T, tr *transit.Transit, seq int) {
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tr.Send(sctx, "OtherModule", message.Message{"ct": seq, "seq": seq}, transit.SendOptions{})
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Errorf("send seq %d: %v", seq, err)
			return
		}
		t.Logf("send seq %d: %v (again)", seq, err)
	}
}

// receiver collects the seqs arriving on cluster_out.
type receiver struct {
	mu      sync.Mutex
	seen    map[int]int
	msgs    []message.Message
	changed chan struct{}
}

func newReceiver() *receiver {
	return &receiver{seen: map[int]int{}, changed: make(chan struct{})}
}

// It owns the queue (Consume), as a daemon owns its tasks' queues, and
// acknowledges each message once recorded.
func (r *receiver) run(ctx context.Context, t *testing.T, tr *transit.Transit) error {
	c, err := tr.Consume(ctx, out)
	if err != nil {
		return fmt.Errorf("consume %s: %w", out, err)
	}
	defer c.Stop()
	for {
		var d *transit.Delivery
		select {
		case <-ctx.Done():
			return nil
		case d = <-c.C():
		}
		if d == nil {
			return fmt.Errorf("consumer of %s stopped", out)
		}
		r.mu.Lock()
		r.seen[int(num(d.Msg["seq"]))]++
		r.msgs = append(r.msgs, d.Msg)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		if err := d.Ack(); err != nil {
			t.Logf("ack on %s: %v", out, err)
		}
	}
}

// wait waits until seqs 0..n-1 have all arrived.
func (r *receiver) wait(t *testing.T, n int, timeout time.Duration, done <-chan error) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		var missing []int
		for i := range n {
			if r.seen[i] == 0 {
				missing = append(missing, i)
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-ch:
		case err := <-done:
			t.Fatalf("receiver ended: %v", err)
		case <-deadline:
			t.Fatalf("within %v, %d of seqs 0..%d did not arrive: %v", timeout, len(missing), n-1, missing)
		}
	}
}

func (r *receiver) first() message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[0]
}

func (r *receiver) dups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.seen {
		n += c - 1
	}
	return n
}

func num(v any) float64 {
	f, _ := message.Float(v)
	return f
}

// rawJS is a JetStream client on the cluster, closed at the test's end.
func rawJS(t *testing.T, c *mmtest.Cluster) jetstream.JetStream { return jsAt(t, c.URLs()) }

// jsAt is a JetStream client of the nodes at urls, closed when the test
// ends.
func jsAt(t *testing.T, urls string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamInfo is the info of host's stream, asked again while the
// cluster cannot answer (a leader election).
func streamInfo(ctx context.Context, t *testing.T, js jetstream.JetStream, host string) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	mmtest.Eventually(t, 30*time.Second, func() error {
		s, err := js.Stream(ctx, "MM_"+host)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		if err == nil && info.Cluster != nil && info.Cluster.Leader == "" {
			return fmt.Errorf("stream of %s has no leader", strings.TrimSpace(host))
		}
		return err
	})
	return info
}

// tail is the end of a log.
func tail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}

// dumpBus logs every stream's and consumer's state, for a failure.
func dumpBus(t *testing.T, js jetstream.JetStream) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name := range js.StreamNames(ctx).Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Logf("stream %s: %v", name, err)
			continue
		}
		si, err := s.Info(ctx)
		if err != nil {
			t.Logf("stream %s: %v", name, err)
			continue
		}
		t.Logf("stream %s: msgs %d, first %d, last %d, cluster %+v", name, si.State.Msgs, si.State.FirstSeq, si.State.LastSeq, si.Cluster)
		for ci := range s.ListConsumers(ctx).Info() {
			t.Logf("  consumer %s: pending %d, ack pending %d, waiting %d, delivered %d, ack floor %d, leader %v",
				ci.Name, ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.Delivered.Stream, ci.AckFloor.Stream, ci.Cluster)
		}
	}
}
