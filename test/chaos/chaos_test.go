// Package chaos is the chaos run: a pipeline of internal,
// external and exec tasks under steady load while a fault injector kills
// externals, the exec co-process, the daemon and the bus with SIGKILL,
// migrates tasks (a Go one and an exec one) between internal and
// external, and rewrites the config.
// At the end it reports what was sent, delivered, lost (must be 0),
// duplicated and out of order (both allowed only for messages in flight
// at a crash, see run.record), the faults injected and the time to
// recover from each. Every stage stamps the messages it handles, so a
// duplicate names the stage that handled its message twice.
//
// The short run (35 s of faults, at shortRate) runs with go test ./...;
// the long run (at longRate) is
//
//	MM_CHAOS_DURATION=10m go test -run TestChaos -v -timeout 30m ./test/chaos/
//
// and the soak (periodic faults, the footprint sampled, see Sample)
//
//	MM_CHAOS_DURATION=1h MM_CHAOS_SOAK=1 go test -run TestChaos -v -timeout 2h ./test/chaos/
//
// MM_CHAOS_RATE sets messages per second, MM_CHAOS_SEED the random seed
// (default: the time), MM_CHAOS_FAULTS a comma-separated subset of the
// faults, MM_CHAOS_PAUSE the longest pause between faults (default 1s,
// 10s in a soak), MM_CHAOS_SAMPLE how often a soak samples (default 30s),
// MM_CHAOS_REPORT a file to write the report to (JSON), and
// MM_CHAOS_DUMP=1 makes a fault not recovered from dump the goroutines of
// the daemon and of every external process into the log.
package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/multimodule/multimodule/examples/testtasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// The pipeline: the test sends {seq} to In (OtherModule, migrated
// between internal and external), which emits to Mid
// (OtherExternalModule, always external), which emits to Exec (PyCounter,
// an exec task, a co-process of the daemon), which emits to Out.
const (
	In   = "OtherModule"
	Mid  = "OtherExternalModule"
	Exec = "PyCounter"
	Out  = "chaos_out"
)

// Fault kinds.
const (
	faultKillExternal = "kill -9 external"
	faultKillExec     = "kill -9 exec co-process"
	faultKillDaemon   = "kill -9 daemon"
	faultKillBus      = "kill -9 bus"
	faultMigrate      = "migrate internal<->external"
	faultMigrateExec  = "migrate exec task"
	faultRewrite      = "rewrite config"
)

var faultKinds = []string{faultKillExternal, faultKillExec, faultKillDaemon, faultKillBus, faultMigrate, faultMigrateExec, faultRewrite}

// crashes are the faults after which redelivery (duplicates, and the
// reordering a redelivery causes) is allowed.
var crashes = map[string]bool{faultKillExternal: true, faultKillExec: true, faultKillDaemon: true, faultKillBus: true}

type settings struct {
	duration time.Duration // of the fault phase
	rate     int           // messages per second
	seed     uint64
	pause    time.Duration // the longest pause between faults (the shortest is a fifth of it)
	soak     bool          // sample the footprint every sample
	sample   time.Duration
}

// Default rates: the long run's is a real load; the short one runs in
// go test ./..., on a CI machine of 2 shared cores busy with the rest of
// the suite, and must not fall behind for good there.
const (
	shortRate = 300
	longRate  = 1000
	shortRun  = 35 * time.Second
)

func settingsFromEnv(t *testing.T) settings {
	t.Helper()
	s := settings{duration: shortRun, seed: uint64(time.Now().UnixNano()), pause: time.Second,
		soak: os.Getenv("MM_CHAOS_SOAK") != "", sample: 30 * time.Second}
	dur := func(name string, d *time.Duration) {
		if v := os.Getenv(name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				t.Fatalf("%s=%q: want a positive duration (%v)", name, v, err)
			}
			*d = x
		}
	}
	dur("MM_CHAOS_DURATION", &s.duration)
	s.rate = shortRate
	if s.duration > shortRun {
		s.rate = longRate
	}
	if s.soak {
		s.pause = 10 * time.Second
	}
	dur("MM_CHAOS_PAUSE", &s.pause)
	dur("MM_CHAOS_SAMPLE", &s.sample)
	if v := os.Getenv("MM_CHAOS_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("MM_CHAOS_RATE=%q: want a positive integer", v)
		}
		s.rate = n
	}
	if v := os.Getenv("MM_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MM_CHAOS_SEED=%q: %v", v, err)
		}
		s.seed = n
	}
	return s
}

// Fault is one injected fault and how long the pipeline took to deliver
// again a message sent after it.
type Fault struct {
	Kind    string        `json:"kind"`
	At      time.Duration `json:"at"`      // since the start of the run
	Recover time.Duration `json:"recover"` // until a message sent after the fault came out
}

// Report is what a chaos run found.
type Report struct {
	Seed          uint64         `json:"seed"`
	Duration      time.Duration  `json:"duration"`
	Rate          int            `json:"rate"`
	Sent          int            `json:"sent"`
	Delivered     int            `json:"delivered"` // distinct messages out
	Lost          int            `json:"lost"`
	Duplicated    int            `json:"duplicated"`               // extra copies out
	DupUnexplain  int            `json:"duplicated_unexplained"`   // copies of messages sent after the last crash
	DupStages     map[string]int `json:"duplicated_at,omitempty"`  // by the stage that handled the message twice
	OutOfOrder    int            `json:"out_of_order"`             // first arrivals after a later message
	OOOUnexplain  int            `json:"out_of_order_unexplained"` // of messages sent after the last crash
	SendRetries   int            `json:"send_retries"`
	DeadLettered  int            `json:"dead_lettered"` // moved to the dead-letter queue by the bus
	Faults        []Fault        `json:"faults"`
	FaultCounts   map[string]int `json:"fault_counts"`
	RecoverMedian time.Duration  `json:"recover_median"`
	RecoverP90    time.Duration  `json:"recover_p90"`
	RecoverP99    time.Duration  `json:"recover_p99"`
	RecoverMax    time.Duration  `json:"recover_max"`
	ByKind        []KindRecovery `json:"by_kind"`
	Samples       []Sample       `json:"samples,omitempty"` // a soak run's
}

// KindRecovery is the recovery of one kind of fault.
type KindRecovery struct {
	Kind   string        `json:"kind"`
	Count  int           `json:"count"`
	Median time.Duration `json:"median"`
	P90    time.Duration `json:"p90"`
	Max    time.Duration `json:"max"`
}

// percentile returns the p-th percentile (nearest rank) of sorted d.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}

// String formats the report for the test log and docs/reliability.md.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %v of faults at %d msgs/s\n", r.Seed, r.Duration, r.Rate)
	fmt.Fprintf(&b, "sent %d, delivered %d, lost %d (dead-lettered %d)\n", r.Sent, r.Delivered, r.Lost, r.DeadLettered)
	fmt.Fprintf(&b, "duplicated %d (unexplained %d), out of order %d (unexplained %d), send retries %d\n",
		r.Duplicated, r.DupUnexplain, r.OutOfOrder, r.OOOUnexplain, r.SendRetries)
	if len(r.DupStages) > 0 {
		fmt.Fprintf(&b, "duplicated at:")
		for _, k := range slices.Sorted(maps.Keys(r.DupStages)) {
			fmt.Fprintf(&b, " %s ×%d;", k, r.DupStages[k])
		}
		b.WriteString("\n")
	}
	kinds := slices.Sorted(maps.Keys(r.FaultCounts))
	fmt.Fprintf(&b, "faults %d:", len(r.Faults))
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s ×%d;", k, r.FaultCounts[k])
	}
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Fprintf(&b, "\nrecovery median %s, p90 %s, p99 %s, max %s\n", ms(r.RecoverMedian), ms(r.RecoverP90), ms(r.RecoverP99), ms(r.RecoverMax))
	b.WriteString("| fault | count | median | p90 | max |\n|---|---|---|---|---|\n")
	for _, k := range r.ByKind {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", k.Kind, k.Count, ms(k.Median), ms(k.P90), ms(k.Max))
	}
	if len(r.Samples) > 0 {
		b.WriteString(sampleTable(r.Samples))
	}
	return b.String()
}

// run is one chaos run's shared bookkeeping.
type run struct {
	t       *testing.T
	env     *mmtest.Env
	cfgPath string
	execDir string
	start   time.Time

	mu        sync.Mutex
	sentAt    []time.Time // by seq: when the send was acknowledged
	seen      map[int64]int
	maxSeen   int64
	crashOpen bool      // a crash was injected and the pipeline has not recovered yet
	crashEnd  time.Time // when the pipeline recovered from the latest crash
	gen       int64     // config generation seen in the latest output
	dup, dupU int
	ooo, oooU int
	retries   int
	retried   map[int64]bool            // seqs whose send was tried again (maybe stored twice)
	first     map[int64]message.Message // the stamps of the first copy of every output (trace)
	dupStages map[string]int
	faults    []Fault
	samples   []Sample
	lastExec  int64 // module_pid of the latest output: the exec co-process
	// The pids that handled the latest output: OtherModule's process
	// (p_in), OtherExternalModule's (p_mid) and the process hosting
	// PyCounter's co-process (host_pid).
	lastIn, lastMid, lastHost int64
	daemon                    int // the daemon's pid (injector goroutine only)
	arrived                   chan struct{}

	soak    bool
	nextSeq atomic.Int64 // the first seq the sender has not begun to send

	// config state (injector goroutine only)
	external     bool // In runs external
	execExternal bool // Exec runs external (a co-process of its own external process)
	cfgGen       int64
}

// now is an expression stamping a message with the time a stage handled
// it: two copies of an output differ first in the stamp of the stage that
// handled the message twice (see dupStage).
const now = " specials/now().UnixNano()"

func (r *run) writeConfig() {
	r.t.Helper()
	route := func(from, to, stamp string) any {
		return map[string]any{
			"match":     map[string]any{"source": from},
			"transform": map[string]any{stamp: now},
			"forwards":  []any{map[string]any{"qname": to}},
		}
	}
	cfg := map[string]any{
		"Router": map[string]any{"routes": []any{route(In, Mid, "r_in"), route(Mid, Exec, "r_mid"), route(Exec, Out, "r_exec")}},
		In:       map[string]any{"increment_by": 1, "is_external": r.external, "transform": map[string]any{"gen": r.cfgGen, "t_in": now, "p_in": " specials/message.module_pid"}},
		Mid:      map[string]any{"increment_by": 1, "is_external": true, "transform": map[string]any{"t_mid": now, "p_mid": " specials/message.module_pid"}},
		Exec:     map[string]any{"increment_by": 1, "is_external": r.execExternal},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		r.t.Fatal(err)
	}
	tmp := r.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.cfgPath); err != nil {
		r.t.Fatal(err)
	}
}

func (r *run) startDaemon() *mmtest.Proc {
	r.t.Helper()
	args := []string{"-p", "MultiModuleTest", "-p", r.execDir, "-c", r.cfgPath}
	if r.soak {
		args = append(args, "--http", "0") // for the goroutine count of its /metrics
	}
	d := r.env.StartDaemon(args...)
	r.daemon = d.PID()
	return d
}

// send sends seq = 0, 1, … at the rate until ctx ends: every few
// milliseconds, the messages due by then (all that fell behind, after a
// fault) go out asynchronously and one Flush waits until the bus stored
// them; only then do they count as sent. A batch whose Flush failed (the
// bus may be down) is sent again until it is stored; its messages may
// then be stored twice (r.retried).
func (r *run) send(ctx context.Context, rate int) {
	tr := r.env.Client()
	tick := time.NewTicker(sendEvery)
	defer tick.Stop()
	start := time.Now()
	seq := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds() * float64(rate))
		for seq < due {
			to := min(due, seq+sendBatch)
			r.nextSeq.Store(int64(to))
			for try := 0; ; try++ {
				err := r.sendBatch(ctx, tr, seq, to)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				r.mu.Lock()
				r.retries++
				for s := seq; s < to; s++ {
					r.retried[int64(s)] = true
				}
				r.mu.Unlock()
				if try == 0 {
					r.t.Logf("send of seqs %d–%d failed, sending them again: %v", seq, to-1, err)
				}
				time.Sleep(50 * time.Millisecond) // retry pacing while the bus restarts
			}
			now := time.Now()
			r.mu.Lock()
			for ; seq < to; seq++ {
				r.sentAt = append(r.sentAt, now)
			}
			r.mu.Unlock()
		}
	}
}

// The sender's pace: how often it sends what is due, and at most how many
// messages one Flush covers.
const (
	sendEvery = 5 * time.Millisecond
	sendBatch = 500
)

// sendBatch sends seqs from..to-1 and waits until the bus stored them.
func (r *run) sendBatch(ctx context.Context, tr *transit.Transit, from, to int) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for seq := from; seq < to; seq++ {
		if err := tr.SendAsync(sctx, In, message.Message{"seq": seq, "ct": seq}, transit.SendOptions{}); err != nil {
			return fmt.Errorf("send seq %d: %w", seq, err)
		}
	}
	return tr.Flush(sctx)
}

// receive takes everything that comes out of Out until ctx ends, as the
// queue's owner (a consumer, which acknowledges as it goes).
func (r *run) receive(ctx context.Context) {
	tr := r.env.Client()
	for ctx.Err() == nil {
		c, err := tr.Consume(ctx, Out)
		if err != nil {
			r.t.Logf("consume %s: %v (trying again)", Out, err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for d := range c.C() {
			r.record(d.Msg)
			if err := d.Ack(); err != nil {
				r.t.Logf("acknowledge an output: %v", err)
			}
		}
		c.Stop()
	}
}

func (r *run) record(m message.Message) {
	seq, ok := message.Int(m["seq"])
	if !ok {
		r.t.Errorf("output without seq: %v", m)
		return
	}
	if my, _ := message.Int(m["my_ct"]); my != seq+1 {
		r.t.Errorf("seq %d: my_ct %d, want %d (every stage's config applied)", seq, my, seq+1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A message may be redelivered (duplicated, or overtaken by a later
	// one) only if it was in flight at a crash: sent before the pipeline
	// recovered from the latest crash, or arriving while a crash is open
	// (from the moment the kill is sent: restarting the daemon takes a
	// while, and its predecessor's unacknowledged messages come again
	// meanwhile), or still being sent, or sent more than once (a retried
	// send may have been stored twice). Bus deliveries are acknowledged
	// only once everything they caused in the process is handled, so a
	// kill repeats at most what was in flight at that moment; migrations
	// and config rewrites must repeat nothing.
	inFlightAtCrash := r.crashOpen || int(seq) >= len(r.sentAt) || !r.sentAt[seq].After(r.crashEnd) || r.retried[seq]
	switch {
	case r.seen[seq] > 0:
		r.dup++
		stage := dupStage(r.first[seq], m)
		r.dupStages[stage]++
		if !inFlightAtCrash {
			r.dupU++
			r.t.Logf("unexplained duplicate of seq %d (handled twice by %s) %s", seq, stage, r.context(seq, r.first[seq], m))
		}
	case seq < r.maxSeen:
		r.ooo++
		if !inFlightAtCrash {
			r.oooU++
			r.t.Logf("unexplained reordering: seq %d after %d %s", seq, r.maxSeen, r.context(seq, m, r.first[r.maxSeen]))
		}
	}
	if r.seen[seq] == 0 {
		r.first[seq] = trace(m)
	}
	r.seen[seq]++
	r.maxSeen = max(r.maxSeen, seq)
	if g, ok := message.Int(m["gen"]); ok {
		r.gen = g
	}
	if pid, ok := message.Int(m["module_pid"]); ok {
		r.lastExec = pid
	}
	r.lastIn, _ = message.Int(m["p_in"])
	r.lastMid, _ = message.Int(m["p_mid"])
	r.lastHost, _ = message.Int(m["host_pid"])
	select {
	case r.arrived <- struct{}{}:
	default:
	}
}

// dupStage names the stage that handled a message twice, given two copies
// of its output: the first stage (in pipeline order) whose stamp differs.
// Identical copies were duplicated after the last stage: published to Out
// twice, or delivered from it twice.
func dupStage(a, b message.Message) string {
	for _, s := range []struct{ key, stage string }{
		{"t_in", In}, {"r_in", "Router after " + In}, {"t_mid", Mid}, {"r_mid", "Router after " + Mid},
		{"count", Exec}, {"module_pid", Exec}, {"r_exec", Exec + " or the Router after it"},
	} {
		if !message.Equal(a[s.key], b[s.key]) {
			return s.stage
		}
	}
	return "the " + Out + " queue"
}

// stamps are the keys of an output that say who handled it when: the
// stages' stamps (see writeConfig), PyCounter's count, the pids.
var stamps = []string{"t_in", "p_in", "r_in", "t_mid", "p_mid", "r_mid", "count", "module_pid", "host_pid", "r_exec", "gen", message.MetaKey}

// trace keeps what an output says of its way through the pipeline (the
// first copy of every output is kept, for the comparison with a later
// copy).
func trace(m message.Message) message.Message {
	t := make(message.Message, len(stamps))
	for _, k := range stamps {
		if v, ok := m[k]; ok {
			t[k] = v
		}
	}
	return t
}

// context describes, for a log line, when seq was sent and arrived
// relative to the latest faults, and two outputs; r.mu held.
func (r *run) context(seq int64, a, b message.Message) string {
	var s strings.Builder
	rel := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(r.start).Seconds()) }
	fmt.Fprintf(&s, "at %s; ", rel(time.Now()))
	if int(seq) < len(r.sentAt) {
		fmt.Fprintf(&s, "sent at %s; ", rel(r.sentAt[seq]))
	}
	fmt.Fprintf(&s, "latest crash recovered at %s; faults before:", rel(r.crashEnd))
	for _, f := range r.faults[max(len(r.faults)-4, 0):] {
		fmt.Fprintf(&s, " [%s at %.3fs, recovered at %.3fs]", f.Kind, f.At.Seconds(), (f.At + f.Recover).Seconds())
	}
	ja, _ := message.Marshal(trace(a))
	jb, _ := message.Marshal(trace(b))
	fmt.Fprintf(&s, "\n\tfirst: %s\n\tthen:  %s", ja, jb)
	return s.String()
}

// crashing opens a crash window: call it just before the kill, so that
// copies the kill causes are attributed to it even while the injector is
// still busy (restarting the daemon takes a while).
func (r *run) crashing() {
	r.mu.Lock()
	r.crashOpen = true
	r.mu.Unlock()
}

// sentCount is the number of acknowledged sends so far.
func (r *run) sentCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sentAt)
}

// waitRecovered waits until a message sent after the fault (seq ≥ from)
// came out, and cond (if any) holds.
func (r *run) waitRecovered(from int, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		ok := r.maxSeen >= int64(from)
		r.mu.Unlock()
		var cerr error
		if ok && cond != nil {
			cerr = cond()
		}
		if ok && cerr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			if cerr != nil {
				return cerr
			}
			return fmt.Errorf("no message sent after the fault (seq ≥ %d) came out within %v", from, timeout)
		}
		select {
		case <-r.arrived:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// handledBy returns the pid the latest output carries in *field.
func (r *run) handledBy(field *int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *field
}

// externalPID returns the live pid of task's external process, or 0.
func (r *run) externalPID(task string) int {
	st, err := r.env.Store().LoadStatus(task)
	if err != nil || st == nil || !st.External || !st.Identity().Alive() {
		return 0
	}
	return st.PID
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	s := settingsFromEnv(t)
	rng := rand.New(rand.NewPCG(s.seed, s.seed>>1|1))
	execDir, err := filepath.Abs("../../examples/exec")
	if err != nil {
		t.Fatal(err)
	}
	mmtest.NeedInterpreter(t, filepath.Join(execDir, "PyCounter"))
	directPython(t)
	r := &run{
		t: t, env: mmtest.NewEnv(t), execDir: execDir,
		cfgPath: filepath.Join(t.TempDir(), "chaos.yaml"),
		seen:    map[int64]int{}, first: map[int64]message.Message{}, retried: map[int64]bool{},
		dupStages: map[string]int{}, maxSeen: -1, arrived: make(chan struct{}, 1), soak: s.soak,
	}
	r.writeConfig()
	d := r.startDaemon()
	r.start = time.Now()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.send(ctx, s.rate) })
	recvCtx, stopRecv := context.WithCancel(context.Background())
	var rwg sync.WaitGroup
	rwg.Go(func() { r.receive(recvCtx) })
	t.Cleanup(func() { stop(); stopRecv(); wg.Wait(); rwg.Wait() })
	if s.soak {
		rwg.Go(func() { r.sampleEvery(recvCtx, s.sample) })
	}
	t.Logf("%v of faults at %d msgs/s, seed %d", s.duration, s.rate, s.seed)

	if err := r.waitRecovered(0, 60*time.Second, nil); err != nil {
		t.Fatalf("pipeline never delivered before any fault: %v\ndaemon stderr:\n%s", err, tail(d.Stderr.String(), 4000))
	}

	kinds := faultKinds
	if v := os.Getenv("MM_CHAOS_FAULTS"); v != "" {
		kinds = strings.Split(v, ",")
	}
	counts := map[string]int{}
	var deck []string
	for time.Since(r.start) < s.duration {
		if len(deck) == 0 {
			deck = slices.Clone(kinds)
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		kind := deck[0]
		deck = deck[1:]
		at := time.Now()
		var cond func() error
		switch kind {
		case faultKillExternal:
			pid := r.externalPID(Mid)
			if pid == 0 {
				continue // being restarted still
			}
			r.crashing()
			_ = syscall.Kill(pid, syscall.SIGKILL)
			cond = func() error {
				if p := r.handledBy(&r.lastMid); p == int64(pid) {
					return fmt.Errorf("%s: the latest output was handled by pid %d, killed", Mid, pid)
				}
				return nil
			}
		case faultKillExec:
			r.mu.Lock()
			pid := int(r.lastExec)
			r.mu.Unlock()
			if pid <= 0 || syscall.Kill(pid, 0) != nil {
				continue
			}
			r.crashing()
			_ = syscall.Kill(pid, syscall.SIGKILL)
		case faultKillDaemon:
			r.crashing()
			d.Kill()
			d = r.startDaemon()
		case faultKillBus:
			bi, err := transit.ReadBusInfo(filepath.Join(r.env.StateDir, "transit"))
			if err != nil || !bi.Alive() {
				continue
			}
			r.crashing()
			_ = syscall.Kill(bi.PID, syscall.SIGKILL)
		case faultMigrate:
			r.external = !r.external
			r.writeConfig()
			want := r.external
			cond = func() error {
				if external := r.handledBy(&r.lastIn) != int64(r.daemon); external != want {
					return fmt.Errorf("%s: the latest output was handled by an external process: %v, want %v after the migration", In, external, want)
				}
				return nil
			}
		case faultMigrateExec:
			r.execExternal = !r.execExternal
			r.writeConfig()
			want := r.execExternal
			cond = func() error {
				if external := r.handledBy(&r.lastHost) != int64(r.daemon); external != want {
					return fmt.Errorf("%s: the latest output was handled by a co-process of an external process: %v, want %v after the migration", Exec, external, want)
				}
				return nil
			}
		case faultRewrite:
			r.cfgGen++
			r.writeConfig()
			want := r.cfgGen
			cond = func() error {
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.gen != want {
					return fmt.Errorf("outputs carry config generation %d, want %d after the rewrite", r.gen, want)
				}
				return nil
			}
		}
		from := int(r.nextSeq.Load()) // sent (handed to the bus) after the fault
		if err := r.waitRecovered(from, 90*time.Second, cond); err != nil {
			if os.Getenv("MM_CHAOS_DUMP") != "" {
				// Goroutine dumps of every external process (found by its
				// command line: a stuck one may not have written its status
				// yet) into its log, and of the daemon into its stderr.
				for pid, cmd := range r.env.Processes() {
					if strings.Contains(cmd, " -m ") {
						_ = syscall.Kill(pid, syscall.SIGQUIT)
					}
				}
				_ = d.Signal(syscall.SIGQUIT)
				d.Wait(t, 10*time.Second)
				t.Logf("daemon goroutines:\n%s", tail(d.Stderr.String(), 200000))
				for _, name := range []string{In, Mid, Exec} {
					data, _ := os.ReadFile(filepath.Join(r.env.StateDir, name+".log"))
					t.Logf("--- %s.log:\n%s", name, tail(string(data), 200000))
				}
			}
			t.Fatalf("after %s at %v: not recovered: %v\ndaemon stderr:\n%s\n%s", kind, at.Sub(r.start).Round(time.Millisecond), err, tail(d.Stderr.String(), 3000), r.diagnostics())
		}
		if crashes[kind] {
			r.mu.Lock()
			r.crashOpen, r.crashEnd = false, time.Now()
			r.mu.Unlock()
		}
		f := Fault{Kind: kind, At: at.Sub(r.start), Recover: time.Since(at)}
		r.mu.Lock()
		r.faults = append(r.faults, f)
		r.mu.Unlock()
		counts[kind]++
		t.Logf("%7.1fs %-28s recovered in %v", f.At.Seconds(), kind, f.Recover.Round(time.Millisecond))
		// Random spacing between faults (pacing, not synchronisation).
		time.Sleep(s.pause/5 + time.Duration(rng.Int64N(int64(s.pause-s.pause/5)+1)))
	}

	// Stop sending; everything acknowledged must come out. The backlog
	// may take a while on a busy machine: the wait ends when nothing more
	// came out for 90 s.
	stop()
	wg.Wait()
	sent := r.sentCount()
	deadline := time.Now().Add(90 * time.Second)
	lastMissing := -1
	for {
		r.mu.Lock()
		missing := 0
		for seq := range sent {
			if r.seen[int64(seq)] == 0 {
				missing++
			}
		}
		r.mu.Unlock()
		if missing != lastMissing {
			lastMissing, deadline = missing, time.Now().Add(90*time.Second)
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-r.arrived:
		case <-time.After(100 * time.Millisecond):
		}
	}
	stopRecv()
	rwg.Wait()

	// Messages the bus moved to the dead-letter queue: with their reason.
	var dead []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := r.env.Client().TryReceive(ctx, transit.DeadLetterQueue)
		cancel()
		if err != nil {
			break
		}
		meta, _ := m[".ipc_transit_meta"].(map[string]any)
		b, _ := json.Marshal(meta["dead_letter"])
		dead = append(dead, fmt.Sprintf("seq %v: %s", m["seq"], b))
	}

	rep := r.report(s, sent, counts)
	rep.DeadLettered = len(dead)
	for _, dl := range dead {
		t.Logf("dead-lettered: %s", dl)
	}
	t.Logf("chaos report:\n%s", rep)
	if path := os.Getenv("MM_CHAOS_REPORT"); path != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
	if rep.Lost != 0 {
		t.Errorf("lost: got %d, want 0 (first missing seqs %v)", rep.Lost, r.missing(sent, 10))
	}
	if rep.DupUnexplain != 0 {
		t.Errorf("duplicates of messages sent after the last crash: got %d, want 0 (see the log for which stage handled them twice)", rep.DupUnexplain)
	}
	if rep.OOOUnexplain != 0 {
		t.Errorf("reorderings of messages sent after the last crash: got %d, want 0", rep.OOOUnexplain)
	}
	for _, k := range kinds {
		if counts[k] == 0 && s.duration >= 30*time.Second {
			t.Errorf("fault %q never injected in %v", k, s.duration)
		}
	}
}

func (r *run) missing(sent, n int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for seq := range sent {
		if r.seen[int64(seq)] == 0 && len(out) < n {
			out = append(out, seq)
		}
	}
	return out
}

func (r *run) report(s settings, sent int, counts map[string]int) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{
		Seed: s.seed, Duration: s.duration, Rate: s.rate, Sent: sent,
		Duplicated: r.dup, DupUnexplain: r.dupU, DupStages: maps.Clone(r.dupStages), OutOfOrder: r.ooo, OOOUnexplain: r.oooU,
		SendRetries: r.retries, Faults: slices.Clone(r.faults), FaultCounts: counts,
	}
	for seq := range sent {
		if r.seen[int64(seq)] > 0 {
			rep.Delivered++
		} else {
			rep.Lost++
		}
	}
	var recs []time.Duration
	byKind := map[string][]time.Duration{}
	for _, f := range r.faults {
		recs = append(recs, f.Recover)
		byKind[f.Kind] = append(byKind[f.Kind], f.Recover)
	}
	if len(recs) > 0 {
		slices.Sort(recs)
		rep.RecoverMedian, rep.RecoverP90, rep.RecoverP99 = percentile(recs, 50), percentile(recs, 90), percentile(recs, 99)
		rep.RecoverMax = recs[len(recs)-1]
	}
	for _, k := range slices.Sorted(maps.Keys(byKind)) {
		d := byKind[k]
		slices.Sort(d)
		rep.ByKind = append(rep.ByKind, KindRecovery{Kind: k, Count: len(d), Median: percentile(d, 50), P90: percentile(d, 90), Max: d[len(d)-1]})
	}
	rep.Samples = slices.Clone(r.samples)
	return rep
}

// diagnostics returns the ends of the bus's and the externals' logs.
func (r *run) diagnostics() string {
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stats, err := r.env.Client().Stats(ctx, transit.QueueFilter{})
	fmt.Fprintf(&b, "--- queues (%v):\n", err)
	for _, q := range stats {
		fmt.Fprintf(&b, "%s: %d waiting\n", q.Name, q.Msgs)
	}
	for _, name := range []string{In, Mid, Exec} {
		if fs, err := r.env.Store().ReadFailsafe(name); err == nil && fs != nil {
			fmt.Fprintf(&b, "--- %s is failsafed: %v\n", name, fs)
		}
	}
	for _, f := range []string{filepath.Join("transit", transit.BusLogFile), Mid + ".log", In + ".log", Exec + ".log"} {
		data, err := os.ReadFile(filepath.Join(r.env.StateDir, f))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", f, tail(string(data), 30000))
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// directPython puts the directory of the real python3 first in PATH, for
// the run's processes: a python3 found through a version manager's shim
// (pyenv's is a shell script that runs a dozen more) costs 0.2–0.5 s per
// start on a busy machine, and every exec task kill and migration starts
// Python once or twice. The run measures MultiModule's recovery, not the
// shim's.
func directPython(t *testing.T) {
	out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	exe := strings.TrimSpace(string(out))
	if err != nil || !filepath.IsAbs(exe) {
		return
	}
	t.Setenv("PATH", filepath.Dir(exe)+string(os.PathListSeparator)+os.Getenv("PATH"))
}
