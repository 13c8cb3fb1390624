package cluster_test

// The harness of the cluster measurement (measure_test.go) and the
// cluster chaos run (chaos_test.go): three boxes on a three-node cluster
// running the Counter as configured, a producer that sends to a box's
// Router at a steady rate (or closed loop) and remembers what the bus
// accepted, a receiver of the Counter's output on box1, and the
// exactly-once check over both.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

var clHosts = []string{"box1", "box2", "box3"}

// clWorld is three boxes on a three-node cluster, every box with the
// same config (placedConfig: the Counter as counter says, the Router
// forwarding the producer's messages to it and its counts to box1's
// counts queue), and the receiver of those counts.
type clWorld struct {
	t     *testing.T
	ctx   context.Context
	c     *mmtest.Cluster
	js    jetstream.JetStream
	boxes map[string]*mmtest.Box
	paths map[string]string
	args  map[string][]string
	rx    *countReceiver
}

func newCLWorld(ctx context.Context, t *testing.T, counter map[string]any) *clWorld {
	t.Helper()
	w := &clWorld{t: t, ctx: ctx, c: mmtest.NewCluster(t, 3), boxes: map[string]*mmtest.Box{}, paths: map[string]string{}, args: map[string][]string{}}
	w.js = rawJS(t, w.c)
	dir := t.TempDir()
	for _, h := range clHosts {
		w.paths[h] = filepath.Join(dir, h+".json")
		w.writeConfig(h, placedConfig(counter))
		w.args[h] = []string{"-p", "MultiModuleTest", "-c", w.paths[h]}
		w.boxes[h] = w.c.StartBox(t, h, w.args[h]...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpBus(t, w.js)
			for _, h := range clHosts {
				b := w.boxes[h]
				t.Logf("%s daemon stdout:\n%s\nstderr:\n%s", h, tail(b.Daemon.Stdout.String()), tail(b.Daemon.Stderr.String()))
			}
		}
	})
	if len(counter) > 0 {
		// Every box has joined the placement (its key is in MM_boxes):
		// where the Counter goes no longer changes as boxes come up.
		waitBoxesLive(ctx, t, w.js, clHosts)
	}
	w.rx = startCountReceiver(ctx, t, w.boxes["box1"].Client())
	return w
}

// writeConfig replaces box host's config file in one rename.
func (w *clWorld) writeConfig(host string, cfg map[string]any) {
	w.t.Helper()
	replaceConfig(w.t, w.paths[host], cfg)
}

// configureAll writes cfg as every box's config.
func (w *clWorld) configureAll(cfg map[string]any) {
	w.t.Helper()
	for _, h := range clHosts {
		w.writeConfig(h, cfg)
	}
}

// boxOf is the box whose daemon has pid now ("" when none).
func (w *clWorld) boxOf(pid int) string {
	for _, h := range clHosts {
		if d := w.boxes[h].Daemon; d != nil && !d.Exited() && d.PID() == pid {
			return h
		}
	}
	return ""
}

// nodeOf is the NATS node box host's daemon is connected to.
func (w *clWorld) nodeOf(host string) *mmtest.Node {
	w.t.Helper()
	var found *mmtest.Node
	mmtest.Eventually(w.t, 30*time.Second, func() error {
		for _, nd := range w.c.Nodes {
			if !nd.Running() {
				continue
			}
			names, err := nd.Clients()
			if err != nil {
				return err
			}
			if slices.Contains(names, "multimodule "+host) {
				found = nd
				return nil
			}
		}
		return fmt.Errorf("no node has %s's daemon as a client", host)
	})
	return found
}

// checkpointCount is the count in the Counter's checkpoint and the box
// that saved it.
func (w *clWorld) checkpointCount() (int64, string, error) {
	kv, err := w.js.KeyValue(w.ctx, "MM_state")
	if err != nil {
		return 0, "", err
	}
	e, err := kv.Get(w.ctx, "Counter")
	if err != nil {
		return 0, "", err
	}
	var cp struct {
		Holder string         `json:"holder"`
		State  map[string]any `json:"state"`
	}
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return 0, "", err
	}
	n, _ := message.Int(cp.State["count"])
	return n, cp.Holder, nil
}

// producer sends {source: Producer, seq} to the Router of a box (entry,
// box1 at first) through box1's client. Every attempt gets a seq of its
// own: a send the bus acknowledged is accepted; a send that failed
// (a timeout while the cluster elects a leader) may or may not have been
// stored, and is not sent again under the same seq, so that every
// message on the bus has its own seq and a count can be tied to it.
type producer struct {
	t     *testing.T
	tr    *transit.Transit
	entry atomic.Value // string: the box whose Router gets the sends

	mu        sync.Mutex
	sentAt    []time.Time // by seq-1: when the send started
	accepted  []bool      // by seq-1
	failed    int
	lastError string
}

func newProducer(t *testing.T, w *clWorld) *producer {
	p := &producer{t: t, tr: w.boxes["box1"].Client()}
	p.entry.Store("box1")
	return p
}

// sendOne sends the next seq and returns it.
func (p *producer) sendOne(ctx context.Context) int64 {
	p.mu.Lock()
	p.sentAt = append(p.sentAt, time.Now())
	p.accepted = append(p.accepted, false)
	seq := int64(len(p.sentAt))
	p.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := p.tr.Send(sctx, "Router", message.Message{"source": "Producer", "seq": seq}, transit.SendOptions{Destination: p.entry.Load().(string)})
	cancel()
	p.mu.Lock()
	if err == nil {
		p.accepted[seq-1] = true
	} else {
		p.failed++
		p.lastError = err.Error()
		if p.failed <= 10 {
			p.t.Logf("send seq %d: %v (not known to the bus; the next send has the next seq)", seq, err)
		}
	}
	p.mu.Unlock()
	return seq
}

// runPaced sends rate messages a second until stop is closed or ctx ends.
func (p *producer) runPaced(ctx context.Context, rate int, stop <-chan struct{}) {
	pace := time.Second / time.Duration(rate)
	next := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		p.sendOne(ctx)
		next = next.Add(pace)
		if d := time.Until(next); d > 0 {
			time.Sleep(d) // the producer's rate, not a synchronisation
		} else if d < -time.Second {
			next = time.Now() // behind by more than a second (a stall): no burst to catch up
		}
	}
}

// start runs runPaced in the background; the returned func stops it and
// waits for the send in flight.
func (p *producer) start(ctx context.Context, rate int) (stop func()) {
	ch := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); p.runPaced(ctx, rate, ch) }()
	var once sync.Once
	return func() { once.Do(func() { close(ch); <-done }) }
}

// sent is how many seqs were tried.
func (p *producer) sent() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.sentAt))
}

// sentTime is when seq was sent.
func (p *producer) sentTime(seq int64) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq < 1 || seq > int64(len(p.sentAt)) {
		return time.Time{}
	}
	return p.sentAt[seq-1]
}

// acceptedSeqs is every seq the bus acknowledged, and how many sends
// failed.
func (p *producer) acceptedSeqs() (seqs []int64, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, ok := range p.accepted {
		if ok {
			seqs = append(seqs, int64(i+1))
		}
	}
	return seqs, p.failed
}

// changedCh is closed when the next count arrives.
func (r *countReceiver) changedCh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// distinct is how many different seqs were counted.
func (r *countReceiver) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first)
}

// waitSeqs waits until every seq of seqs was counted.
func (r *countReceiver) waitSeqs(t *testing.T, seqs []int64, timeout time.Duration) {
	t.Helper()
	r.waitFor(t, timeout, fmt.Sprintf("all %d accepted messages counted", len(seqs)), func([]countMsg) bool {
		for _, s := range seqs {
			if _, ok := r.first[s]; !ok {
				return false
			}
		}
		return true
	})
}

// awaitSeqs waits until every seq of seqs was counted, and returns those
// that were not within timeout.
func (r *countReceiver) awaitSeqs(seqs []int64, timeout time.Duration) (missing []int64) {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		missing = missing[:0]
		for _, s := range seqs {
			if _, ok := r.first[s]; !ok {
				missing = append(missing, s)
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-deadline:
			return missing
		}
	}
}

// abbrev is seqs for a message: the first 20, and how many more.
func abbrev(seqs []int64) string {
	if len(seqs) <= 20 {
		return fmt.Sprint(seqs)
	}
	return fmt.Sprintf("%v and %d more", seqs[:20], len(seqs)-20)
}

// firstAfter returns the first count received after since for which ok
// holds, waiting for it up to timeout (the test fails without one).
func (r *countReceiver) firstAfter(t *testing.T, since time.Time, timeout time.Duration, what string, ok func(countMsg) bool) countMsg {
	t.Helper()
	m, found := r.awaitFirstAfter(since, timeout, ok)
	if !found {
		t.Fatalf("within %v: %s (%d counts received)", timeout, what, r.received())
	}
	return m
}

// awaitFirstAfter is firstAfter without failing: found is false when no
// such count came within timeout.
func (r *countReceiver) awaitFirstAfter(since time.Time, timeout time.Duration, ok func(countMsg) bool) (m countMsg, found bool) {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for i := len(r.got) - 1; i >= 0 && r.got[i].at.After(since); i-- {
			if ok(r.got[i]) {
				m = r.got[i] // keep going back: the first one wins
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if !m.at.IsZero() {
			return m, true
		}
		select {
		case <-ch:
		case <-deadline:
			return m, false
		}
	}
}

// received is how many counts arrived so far.
func (r *countReceiver) received() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// recovered waits until, after from, a count received from pid (any pid
// when 0) took at most limit from its send to its arrival: the backlog
// is drained and the pipeline is back at the offered rate. It is a
// measurement: ok is false when that did not happen within timeout (a
// machine too loaded for the offered rate), which fails no test.
func (r *countReceiver) recovered(p *producer, from time.Time, pid int, limit time.Duration, timeout time.Duration) (time.Time, bool) {
	m, ok := r.awaitFirstAfter(from, timeout, func(m countMsg) bool {
		return (pid == 0 || m.pid == pid) && m.at.Sub(p.sentTime(m.seq)) <= limit
	})
	return m.at, ok
}

// latencyLimit is the send → count latency that counts as "back at the
// offered rate": 1.5 times the 90th percentile over the counts received
// in the window before at, and at least 50 ms.
func (r *countReceiver) latencyLimit(p *producer, at time.Time, window time.Duration) time.Duration {
	r.mu.Lock()
	var lat []time.Duration
	for i := len(r.got) - 1; i >= 0 && r.got[i].at.After(at.Add(-window)); i-- {
		if r.got[i].at.Before(at) {
			lat = append(lat, r.got[i].at.Sub(p.sentTime(r.got[i].seq)))
		}
	}
	r.mu.Unlock()
	if len(lat) == 0 {
		return 200 * time.Millisecond
	}
	slices.Sort(lat)
	return max(lat[len(lat)*9/10]*3/2, 50*time.Millisecond)
}

// lastPid is the pid of the last count received.
func (r *countReceiver) lastPid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return 0
	}
	return r.got[len(r.got)-1].pid
}

// fault is a time window around a fault or a move, in which a count may
// arrive twice for a known reason.
type fault struct {
	what     string
	from, to time.Time
}

// exactlyOnceResult is what checkExactlyOnce found.
type exactlyOnceResult struct {
	Sent       int64 `json:"sent"`        // seqs tried
	Accepted   int   `json:"accepted"`    // acknowledged by the bus
	Failed     int   `json:"send_failed"` // not acknowledged (may be on the bus)
	Counted    int   `json:"counted"`     // different seqs counted
	FinalCount int64 `json:"final_count"` // the Counter's state count at the end
	Duplicates int   `json:"duplicates"`  // counts received again (same seq, same count)
}

// checkExactlyOnce stops nothing: call it once the producer stopped. It
// waits until every message the bus accepted was counted and the
// Counter's state (the checkpoint when placed, the last count
// otherwise) counts every message counted, then checks: nothing
// accepted is lost; every seq has one count and every count one seq,
// the counts being 1..N (each message changed the state exactly once);
// every count received twice is the same count for the same message and
// came around a fault (from two boxes, or inside a fault's window).
func (w *clWorld) checkExactlyOnce(p *producer, placed bool, faults []fault) exactlyOnceResult {
	t := w.t
	t.Helper()
	acc, failed := p.acceptedSeqs()
	res := exactlyOnceResult{Sent: p.sent(), Accepted: len(acc), Failed: failed}
	if missing := w.rx.awaitSeqs(acc, 120*time.Second); len(missing) > 0 {
		t.Errorf("exactly once: %d of the %d messages the bus accepted not counted within 120s: seqs %v", len(missing), len(acc), abbrev(missing))
	}
	// A failed send that the bus stored all the same is counted too:
	// wait for the state to agree with what was counted.
	var mismatch error
	for deadline := time.Now().Add(30 * time.Second); ; {
		n := int64(w.rx.distinct())
		var st int64
		var err error
		if placed {
			st, _, err = w.checkpointCount()
		} else {
			w.rx.mu.Lock()
			for _, m := range w.rx.got {
				st = max(st, m.count)
			}
			w.rx.mu.Unlock()
		}
		res.FinalCount, res.Counted = st, int(n)
		switch {
		case err != nil:
			mismatch = fmt.Errorf("the Counter's checkpoint: %w", err)
		case st != n:
			mismatch = fmt.Errorf("the Counter's state counts %d, %d different messages counted", st, n)
		default:
			mismatch = nil
		}
		if mismatch == nil || time.Now().After(deadline) {
			break
		}
		ch := w.rx.changedCh()
		select {
		case <-ch:
		case <-time.After(250 * time.Millisecond): // the checkpoint is polled
		}
	}
	if mismatch != nil {
		t.Errorf("exactly once: %v", mismatch)
	}
	r := w.rx
	r.mu.Lock()
	defer r.mu.Unlock()
	countOf := map[int64]countMsg{}
	seqOf := map[int64]int64{}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for _, m := range r.got {
		if prev, ok := countOf[m.seq]; ok {
			if prev.count != m.count {
				report("seq %d counted as %d (pid %d) and as %d (pid %d): counted twice", m.seq, prev.count, prev.pid, m.count, m.pid)
				continue
			}
			res.Duplicates++
			explained := prev.pid != m.pid
			for _, f := range faults {
				if !m.at.Before(f.from) && !m.at.After(f.to) {
					explained = true
				}
			}
			if !explained {
				report("seq %d: count %d received twice from pid %d at %v, outside any fault", m.seq, m.count, m.pid, m.at.Format(time.StampMilli))
			}
			continue
		}
		countOf[m.seq] = m
		if s, ok := seqOf[m.count]; ok && s != m.seq {
			report("count %d given to seq %d and to seq %d: a state effect lost", m.count, s, m.seq)
		}
		seqOf[m.count] = m.seq
	}
	var gaps []int64
	top := int64(len(countOf))
	for c := range seqOf {
		top = max(top, c)
	}
	for c := int64(1); c <= top; c++ {
		if _, ok := seqOf[c]; !ok {
			gaps = append(gaps, c)
		}
	}
	if len(gaps) > 0 {
		report("%d counts of 1..%d never received (an output lost, or a message counted twice): %v", len(gaps), top, abbrev(gaps))
	}
	p.mu.Lock()
	accepted := slices.Clone(p.accepted)
	p.mu.Unlock()
	for i, ok := range accepted {
		if seq := int64(i + 1); !ok {
			m, counted := countOf[seq]
			t.Logf("seq %d, whose send failed: counted %v (as %d)", seq, counted, m.count)
		}
	}
	for _, s := range acc {
		if _, ok := countOf[s]; !ok {
			report("seq %d, accepted by the bus, never counted: lost", s)
		}
	}
	return res
}

// durStats is the median and maximum of ds, for the logs and the report.
type durStats struct {
	Runs   int       `json:"runs"`
	Median float64   `json:"median_s"`
	Max    float64   `json:"max_s"`
	All    []float64 `json:"all_s"`
}

func statsOf(ds []time.Duration) durStats {
	s := durStats{Runs: len(ds)}
	if len(ds) == 0 {
		return s
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	s.Median, s.Max = med.Seconds(), sorted[len(sorted)-1].Seconds()
	for _, d := range ds {
		s.All = append(s.All, d.Seconds())
	}
	return s
}

func (s durStats) String() string {
	return fmt.Sprintf("median %.3fs, max %.3fs over %d runs", s.Median, s.Max, s.Runs)
}

// envInt is the integer in environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number of at least 1", name, v)
	}
	return n
}

// envDuration is the duration in environment variable name, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 45s or 10m", name, v)
	}
	return d
}

// loadAverage is the machine's 1-, 5- and 15-minute load averages.
func loadAverage() [3]float64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return [3]float64{}
	}
	var l [3]float64
	for i := range l {
		l[i] = float64(si.Loads[i]) / 65536
	}
	return l
}

// writeReport writes v as JSON to the file MM_CLUSTER_REPORT names, if set.
func writeReport(t *testing.T, v any) {
	path := os.Getenv("MM_CLUSTER_REPORT")
	if path == "" {
		return
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Errorf("write MM_CLUSTER_REPORT %s: %v", path, err)
	}
}
