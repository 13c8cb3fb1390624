package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// counts is the queue on box1 where the Counter's output ends.
const counts = "counts"

// placedConfig is the config every box runs: the Counter placed as
// placement says; the Router forwards what the producer (source
// Producer) sends to the Counter by name, and the Counter's counts to
// box1's counts queue.
func placedConfig(placement map[string]any) map[string]any {
	return map[string]any{
		"Counter": placement,
		"Router": map[string]any{"routes": []any{
			route("Producer", map[string]any{"qname": "Counter"}),
			route("Counter", map[string]any{"qname": counts, "destination": "box1"}),
		}},
	}
}

// placedWorld is three boxes on a three-node cluster with the same config.
type placedWorld struct {
	t     *testing.T
	ctx   context.Context
	c     *mmtest.Cluster
	js    jetstream.JetStream
	boxes map[string]*mmtest.Box
	paths map[string]string // each box's config file
	args  map[string][]string
	rx    *countReceiver
	// producer is the box whose Router the producer sends to (box1
	// unless a test kills box1's daemon).
	producer string
}

func newPlacedWorld(t *testing.T, placement map[string]any) *placedWorld {
	t.Helper()
	w := &placedWorld{t: t, c: mmtest.NewCluster(t, 3), boxes: map[string]*mmtest.Box{}, paths: map[string]string{}, args: map[string][]string{}, producer: "box1"}
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	t.Cleanup(cancel)
	w.ctx = ctx
	w.js = rawJS(t, w.c)
	dir := t.TempDir()
	for _, host := range []string{"box1", "box2", "box3"} {
		w.paths[host] = filepath.Join(dir, host+".json")
		w.writeConfig(host, placedConfig(placement))
		w.args[host] = []string{"-p", "MultiModuleTest", "-c", w.paths[host]}
		w.boxes[host] = w.c.StartBox(t, host, w.args[host]...)
	}
	t.Cleanup(func() {
		for _, host := range []string{"box1", "box2", "box3"} {
			if d := w.boxes[host].Daemon; d != nil && strings.Contains(d.Stderr.String(), "WARNING: DATA RACE") {
				t.Errorf("%s's daemon found a data race (-race):\n%s", host, tail(d.Stderr.String()))
			}
		}
		if t.Failed() {
			dumpBus(t, w.js)
			for _, host := range []string{"box1", "box2", "box3"} {
				b := w.boxes[host]
				t.Logf("%s daemon stdout:\n%s\nstderr:\n%s", host, tail(b.Daemon.Stdout.String()), tail(b.Daemon.Stderr.String()))
			}
		}
	})
	// Every box has joined the placement (its key is in MM_boxes): where
	// a task goes no longer changes as boxes come up.
	waitBoxesLive(ctx, t, w.js, []string{"box1", "box2", "box3"})
	w.rx = startCountReceiver(ctx, t, w.boxes["box1"].Client())
	return w
}

// writeConfig replaces box host's config file (one rename: its daemon
// never reads half of it).
func (w *placedWorld) writeConfig(host string, cfg map[string]any) {
	w.t.Helper()
	replaceConfig(w.t, w.paths[host], cfg)
}

// replaceConfig writes cfg to path in one rename.
func replaceConfig(t *testing.T, path string, cfg map[string]any) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitBoxesLive waits until every one of hosts has its key in MM_boxes:
// live in the placement, so that where a task goes no longer changes as
// boxes come up.
func waitBoxesLive(ctx context.Context, t *testing.T, js jetstream.JetStream, hosts []string) {
	t.Helper()
	mmtest.Eventually(t, 60*time.Second, func() error {
		kv, err := js.KeyValue(ctx, "MM_boxes")
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if _, err := kv.Get(ctx, h); err != nil {
				return fmt.Errorf("%s not live in the placement yet: %w", h, err)
			}
		}
		return nil
	})
}

// startCountReceiver starts collecting the counts on box1's counts queue
// through client, until ctx ends or the test does.
func startCountReceiver(ctx context.Context, t *testing.T, client *transit.Transit) *countReceiver {
	r := newCountReceiver()
	rctx, rcancel := context.WithCancel(ctx)
	t.Cleanup(rcancel)
	go r.run(rctx, t, client)
	return r
}

// send sends seqs from..to (inclusive) as the producer, to the Router of
// box w.producer, every pace.
func (w *placedWorld) send(from, to int, pace time.Duration) {
	tr := w.boxes[w.producer].Client()
	next := time.Now()
	for seq := from; seq <= to; seq++ {
		for {
			sctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
			err := tr.Send(sctx, "Router", message.Message{"source": "Producer", "seq": seq}, transit.SendOptions{})
			cancel()
			if err == nil {
				break
			}
			if w.ctx.Err() != nil {
				w.t.Errorf("send seq %d: %v", seq, err)
				return
			}
			w.t.Logf("send seq %d: %v (again)", seq, err)
		}
		if pace > 0 {
			next = next.Add(pace)
			if d := time.Until(next); d > 0 {
				time.Sleep(d) // the producer's rate, not a synchronisation
			}
		}
	}
}

// checkpoint is the Counter's checkpoint in the cluster's state bucket.
func (w *placedWorld) checkpoint() (holder string, count, disorder int64, err error) {
	kv, err := w.js.KeyValue(w.ctx, "MM_state")
	if err != nil {
		return "", 0, 0, err
	}
	e, err := kv.Get(w.ctx, "Counter")
	if err != nil {
		return "", 0, 0, err
	}
	var cp struct {
		Holder string         `json:"holder"`
		State  map[string]any `json:"state"`
	}
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return "", 0, 0, err
	}
	count, _ = message.Int(cp.State["count"])
	disorder, _ = message.Int(cp.State["disorder"])
	return cp.Holder, count, disorder, nil
}

// waitCheckpoint waits until the checkpoint counts n, and checks that
// nothing was counted twice or out of order, and who holds it.
func (w *placedWorld) waitCheckpoint(n int64, holder string) {
	w.t.Helper()
	mmtest.Eventually(w.t, 90*time.Second, func() error {
		h, count, disorder, err := w.checkpoint()
		switch {
		case err != nil:
			return err
		case count != n:
			return fmt.Errorf("checkpoint counts %d, want %d", count, n)
		case disorder != 0:
			w.t.Fatalf("checkpoint: %d messages counted twice or out of order", disorder)
		case holder != "" && h != holder:
			return fmt.Errorf("checkpoint by %s, want %s", h, holder)
		}
		return nil
	})
}

// placedRunners is, from `status --all-hosts --json` on box1, the boxes
// listing the Counter as running, and the pid each names.
func (w *placedWorld) placedRunners() (map[string]int, error) {
	stdout, stderr, code := w.boxes["box1"].Run("status", "--all-hosts", "--json", "--wait=30s")
	if code != 0 {
		return nil, fmt.Errorf("status --all-hosts: exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var lines []struct {
		Host    string `json:"host"`
		Task    string `json:"task"`
		Where   string `json:"where"`
		PID     int    `json:"pid"`
		Running bool   `json:"running"`
	}
	if err := json.Unmarshal([]byte(stdout), &lines); err != nil {
		return nil, fmt.Errorf("status --all-hosts --json: %v; stdout:\n%s", err, stdout)
	}
	got := map[string]int{}
	for _, l := range lines {
		if l.Task != "Counter" {
			continue
		}
		if l.Where != "placed" || !l.Running {
			return nil, fmt.Errorf("status --all-hosts lists Counter on %s as %q running %v, want placed and running; stdout:\n%s", l.Host, l.Where, l.Running, stdout)
		}
		got[l.Host] = l.PID
	}
	return got, nil
}

func (w *placedWorld) waitRunsOn(host string) {
	w.t.Helper()
	mmtest.Eventually(w.t, 60*time.Second, func() error {
		got, err := w.placedRunners()
		if err != nil {
			return err
		}
		if len(got) != 1 || got[host] != w.boxes[host].Daemon.PID() {
			return fmt.Errorf("Counter runs on %v, want only %s (pid %d)", got, host, w.boxes[host].Daemon.PID())
		}
		return nil
	})
}

// TestPlacedTask: the Counter, pinned to box2 by the same config on
// every box, runs on box2 only and counts every message the producer on
// box1 sends to it by name; then, while the producer sends, every box's
// config pins it to box3: it moves with its state, and every message is
// counted exactly once, in order.
func TestPlacedTask(t *testing.T) {
	w := newPlacedWorld(t, map[string]any{"host": "box2"})
	const first = 200
	w.send(1, first, 0)
	w.rx.wait(t, first, 90*time.Second)
	w.waitCheckpoint(first, "box2")
	w.waitRunsOn("box2")
	if pids := w.rx.pidsOf(1, first); len(pids) != 1 || !pids[w.boxes["box2"].Daemon.PID()] {
		t.Errorf("counted by pids %v, want box2's daemon %d only", pids, w.boxes["box2"].Daemon.PID())
	}

	// The move, under load: 300 messages a second for 4 s.
	const total = first + 1200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.send(first+1, total, time.Second/300) }()
	w.rx.wait(t, first+150, 60*time.Second)
	moved := time.Now()
	for _, host := range []string{"box1", "box2", "box3"} {
		w.writeConfig(host, placedConfig(map[string]any{"host": "box3"}))
	}
	box3 := w.boxes["box3"].Daemon.PID()
	at := w.rx.waitPid(t, box3, 60*time.Second)
	t.Logf("move: config written → first message counted on box3 after %v (as box1 received its count)", at.Sub(moved).Round(time.Millisecond))
	wg.Wait()
	w.rx.wait(t, total, 90*time.Second)
	w.waitCheckpoint(total, "box3")
	w.rx.check(t, total)
	w.waitRunsOn("box3")
	t.Logf("move: %d counts received twice (the same count for the same message: redelivered, counted once)", w.rx.dups())
}

// TestPlacedFailover: the Counter may run on any box; the daemon of the
// box running it is killed with SIGKILL while the producer sends (to the
// Router of another box);
// another box takes it over from its last checkpoint, and every message
// is counted exactly once. The killed box, started again, does not run
// it too.
func TestPlacedFailover(t *testing.T) {
	w := newPlacedWorld(t, map[string]any{"placement": map[string]any{"any": true}})
	const first = 100
	w.send(1, first, 0)
	w.rx.wait(t, first, 90*time.Second)
	w.waitCheckpoint(first, "")
	holder, _, _, err := w.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	victim := w.boxes[holder]
	if victim == nil {
		t.Fatalf("the checkpoint's holder %q is no box", holder)
	}
	w.waitRunsOn(holder)
	// The messages must not wait for the killed box's own Router.
	for _, host := range []string{"box1", "box2", "box3"} {
		if host != holder {
			w.producer = host
			break
		}
	}

	const total = first + 600
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.send(first+1, total, time.Second/200) }()
	w.rx.wait(t, first+100, 60*time.Second)
	oldPID := victim.Daemon.PID()
	killed := time.Now()
	victim.Daemon.Kill()
	t.Logf("killed %s's daemon (pid %d) with SIGKILL", holder, oldPID)
	var at time.Time
	var by int
	mmtest.Eventually(t, 60*time.Second, func() error {
		var ok bool
		at, by, ok = w.rx.firstOtherThan(oldPID, killed)
		if !ok {
			return errors.New("no message counted by another box since the kill")
		}
		return nil
	})
	t.Logf("failover: kill → first message counted by pid %d after %v (as box1 received its count)", by, at.Sub(killed).Round(time.Millisecond))
	wg.Wait()
	w.rx.wait(t, total, 90*time.Second)
	w.rx.check(t, total)
	newHolder, _, _, err := w.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	w.waitCheckpoint(total, newHolder)
	if newHolder == holder {
		t.Fatalf("the checkpoint names the killed box %s as the holder", holder)
	}

	// The killed box comes back: one box runs the Counter, not two, and
	// counting goes on exactly once.
	victim.Daemon = victim.StartDaemon(w.args[holder]...)
	const after = total + 100
	w.send(total+1, after, 0)
	w.rx.wait(t, after, 90*time.Second)
	w.rx.check(t, after)
	h, _, _, err := w.checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	w.waitCheckpoint(after, h)
	w.waitRunsOn(h)
	t.Logf("failover: %d counts received twice (redelivered after the kill, counted once)", w.rx.dups())
}

// countReceiver collects the Counter's output on box1's counts queue.
type countReceiver struct {
	mu      sync.Mutex
	got     []countMsg
	first   map[int64]int // seq → index in got of its first count
	changed chan struct{}
}

func newCountReceiver() *countReceiver {
	return &countReceiver{first: map[int64]int{}, changed: make(chan struct{})}
}

// countMsg is one count the Counter emitted, as box1's counts queue gave it.
type countMsg struct {
	seq, count int64
	pid        int
	at         time.Time
}

func (r *countReceiver) run(ctx context.Context, t *testing.T, tr *transit.Transit) {
	c, err := tr.Consume(ctx, counts)
	if err != nil {
		t.Errorf("consume %s: %v", counts, err)
		return
	}
	defer c.Stop()
	for {
		var d *transit.Delivery
		select {
		case <-ctx.Done():
			return
		case d = <-c.C():
		}
		if d == nil {
			return
		}
		seq, _ := message.Int(d.Msg["seq"])
		count, _ := message.Int(d.Msg["count"])
		pid, _ := message.Int(d.Msg["pid"])
		r.mu.Lock()
		if _, ok := r.first[seq]; !ok {
			r.first[seq] = len(r.got)
		}
		r.got = append(r.got, countMsg{seq: seq, count: count, pid: int(pid), at: time.Now()})
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		_ = d.Ack()
	}
}

// gaps describes what is missing among the counts received: the seqs
// below the highest one received that never came, and the counts the
// Counter emitted around each (a gap in the counts says the Counter
// counted it and its output was lost; no gap says it never reached the
// Counter).
func (r *countReceiver) gaps() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var top int64
	bySeq := map[int64]int64{}
	counts := map[int64]bool{}
	for _, c := range r.got {
		top = max(top, c.seq)
		bySeq[c.seq] = c.count
		counts[c.count] = true
	}
	var missing []string
	for s := int64(1); s <= top && len(missing) < 10; s++ {
		if _, ok := bySeq[s]; !ok {
			missing = append(missing, fmt.Sprintf("seq %d (counts of seq %d: %d, seq %d: %d)", s, s-1, bySeq[s-1], s+1, bySeq[s+1]))
		}
	}
	var skipped []int64
	for c := int64(1); c <= int64(len(r.got)) && len(skipped) < 10; c++ {
		if !counts[c] {
			skipped = append(skipped, c)
		}
	}
	return fmt.Sprintf("highest seq %d; missing %v; counts never received %v", top, missing, skipped)
}

// waitFor waits until ok holds for what arrived.
func (r *countReceiver) waitFor(t *testing.T, timeout time.Duration, what string, ok func([]countMsg) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		done := ok(r.got)
		ch := r.changed
		n := len(r.got)
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("within %v: %s (%d counts received; %s)", timeout, what, n, r.gaps())
		}
	}
}

// wait waits until seqs 1..n were all counted.
func (r *countReceiver) wait(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	r.waitFor(t, timeout, fmt.Sprintf("seqs 1..%d counted", n), func(got []countMsg) bool {
		seen := make([]bool, n+1)
		k := 0
		for _, m := range got {
			if m.seq >= 1 && m.seq <= int64(n) && !seen[m.seq] {
				seen[m.seq] = true
				k++
			}
		}
		return k == n
	})
}

// waitPid waits until a message counted by pid arrives, and returns when.
func (r *countReceiver) waitPid(t *testing.T, pid int, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	r.waitFor(t, timeout, fmt.Sprintf("a message counted by pid %d", pid), func(got []countMsg) bool {
		for _, m := range got {
			if m.pid == pid {
				at = m.at
				return true
			}
		}
		return false
	})
	return at
}

// firstOtherThan is the first message counted by a pid other than pid,
// received after since.
func (r *countReceiver) firstOtherThan(pid int, since time.Time) (time.Time, int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.got {
		if m.pid != pid && m.at.After(since) {
			return m.at, m.pid, true
		}
	}
	return time.Time{}, 0, false
}

// check checks exactly-once and order: each message's count is its seq
// (the producer's seqs start at 1: a count off by one is a message lost
// or counted twice), and, apart from counts received again (the same
// message counted again from the same checkpoint, after a take-over),
// the counts arrive in increasing order.
func (r *countReceiver) check(t *testing.T, n int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var last int64
	bad := 0
	for _, m := range r.got {
		if m.count != m.seq {
			if bad++; bad <= 5 {
				t.Errorf("seq %d counted as %d by pid %d: lost or counted twice", m.seq, m.count, m.pid)
			}
		}
		if m.count > last+1 {
			if bad++; bad <= 5 {
				t.Errorf("count %d after %d: out of order", m.count, last)
			}
		}
		last = max(last, m.count)
	}
	if last != int64(n) {
		t.Errorf("last count %d, want %d", last, n)
	}
}

// dups is how many counts arrived more than once.
func (r *countReceiver) dups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[int64]bool{}
	n := 0
	for _, m := range r.got {
		if seen[m.seq] {
			n++
		}
		seen[m.seq] = true
	}
	return n
}

// pidsOf is the set of pids that counted seqs from..to.
func (r *countReceiver) pidsOf(from, to int64) map[int]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	pids := map[int]bool{}
	for _, m := range r.got {
		if m.seq >= from && m.seq <= to {
			pids[m.pid] = true
		}
	}
	return pids
}
