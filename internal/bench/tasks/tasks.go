// Package tasks registers the Bench namespace: the tasks `multimodule
// bench` drives (enable them in a daemon with -p Bench).
//
//   - Producer (stateless): on config {run, duration, rate, size} it emits
//     messages {seq, bench_ts, pad} for duration seconds, at rate messages
//     per second (open loop) or, with rate 0, as fast as the Router takes
//     them (closed loop: a full mailbox or bus window holds it back).
//   - Consumer, Consumer2, Consumer3, Consumer4 (stateful, so they may run
//     external): record the latency from bench_ts (the producer's emit
//     time) to their handler in a histogram and send cumulative reports to
//     queue BenchReport.
//   - Relay (stateless): stamps bench_ts from the message's send time when
//     missing, and emits it (the cli scenario: send → Relay → recv).
//   - Idle0000…Idle9999 (stateful) and Ext00…Ext199 (stateful): the
//     scale scenario's tasks; they count messages and report when
//     configured. They are registered only where the scale scenario runs
//     (RegisterScale, ScaleEnv): ten thousand definitions cost every
//     process of the stock binary tens of milliseconds at start-up, the
//     larger part of an external task's restart.
//
// Reports are messages on queue ReportQueue; see Report for their keys.
package tasks

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// Namespace is the namespace the bench tasks register under.
const Namespace = "Bench"

// ReportQueue is the queue every bench task reports to.
const ReportQueue = "BenchReport"

// Scale task counts: the largest scale scenario the registry supports.
const (
	MaxIdle      = 10000
	MaxExternals = 200
)

// FanoutRoutes are the Router's routes of the fanout scenario (also
// measured by the router and host benchmarks): 10 routes; 6 never match
// the producer's messages (other sources, a missing key, a regex that
// fails), 4 match them, each forwarding to its own consumer.
func FanoutRoutes() []any {
	route := func(match map[string]any, q string) any {
		return map[string]any{"match": match, "forwards": []any{map[string]any{"qname": q}}}
	}
	src := map[string]any{"source": "Producer"}
	return []any{
		route(map[string]any{"source": "Nobody"}, "Consumer"),
		route(src, "Consumer"),
		route(map[string]any{"kind": "audit"}, "Consumer2"),
		route(map[string]any{"source": "Producer", "lane": "b"}, "Consumer3"),
		route(src, "Consumer2"),
		route(map[string]any{"source": " special/^Other/"}, "Consumer4"),
		route(map[string]any{"seq": "never"}, "Consumer4"),
		route(map[string]any{"source": " special/^Prod/"}, "Consumer3"),
		route(map[string]any{"missing": map[string]any{"x": 1}}, "Consumer"),
		route(map[string]any{"pad": " special/^x*$/"}, "Consumer4"),
	}
}

// ConsumerNames are the recording tasks (fanout uses all four).
var ConsumerNames = []string{"Consumer", "Consumer2", "Consumer3", "Consumer4"}

// IdleName is the name of scale task i (internal).
func IdleName(i int) string { return fmt.Sprintf("Idle%04d", i) }

// ExtName is the name of scale task i (external).
func ExtName(i int) string { return fmt.Sprintf("Ext%02d", i) }

func init() {
	reg := func(name string, stateful bool, f func() (task.Task, error)) {
		task.Register(task.Definition{Namespace: Namespace, Name: name, Stateful: stateful, New: f})
	}
	reg("Producer", false, func() (task.Task, error) { return &Producer{}, nil })
	reg("Relay", false, func() (task.Task, error) { return task.Func(relay), nil })
	for _, n := range ConsumerNames {
		reg(n, true, func() (task.Task, error) { return &Consumer{}, nil })
	}
	if os.Getenv(ScaleEnv) != "" {
		registerScale()
	}
}

// ScaleEnv is the environment variable that makes a process of this
// binary register the scale tasks (Idle…, Ext…) at start-up, when it is
// not empty. RegisterScale sets it, so that the external processes a
// daemon starts after it (they inherit the environment) have them too.
const ScaleEnv = "MULTIMODULE_BENCH_SCALE"

var (
	scaleMu         sync.Mutex
	scaleRegistered bool
)

// RegisterScale registers the scale tasks in this process (once) and sets
// ScaleEnv for the processes it starts from now on. Only the scale
// scenario needs them: every other process leaves them out.
func RegisterScale() {
	registerScale()
	_ = os.Setenv(ScaleEnv, "1") // fails only on a malformed name
}

// registerScale registers MaxIdle Idle and MaxExternals Ext tasks, once.
func registerScale() {
	scaleMu.Lock()
	defer scaleMu.Unlock()
	if scaleRegistered {
		return
	}
	scaleRegistered = true
	for i := range MaxIdle {
		task.Register(task.Definition{Namespace: Namespace, Name: IdleName(i), Stateful: true, New: newIdle})
	}
	for i := range MaxExternals {
		task.Register(task.Definition{Namespace: Namespace, Name: ExtName(i), Stateful: true, New: newIdle})
	}
}

func newIdle() (task.Task, error) { return &Idle{}, nil }

// now is the clock every bench task stamps and reads (unix nanoseconds).
func now() int64 { return time.Now().UnixNano() }

// Producer emits the benchmark's messages (see the package doc).
type Producer struct {
	run      string
	start    int64 // unix ns
	end      int64
	rate     float64
	pad      string
	seq      int64
	reported int64 // unix ns of the last report
	done     bool
}

// closedBurst is how long one closed-loop run of the producer's recurring
// work emits before it gives its goroutine back for a moment.
const closedBurst = 20 * time.Millisecond

// SetConfig starts a run when config.run changes; with config.stop it
// ends the current run instead. Only the daemon's copy
// produces: external processes host copies of every stateless task
// (docs/operations.md), and theirs must stay quiet.
func (p *Producer) SetConfig(tc *task.Context, config map[string]any) error {
	if tc.Process() != "main" {
		return nil
	}
	run, _ := message.ScalarText(config["run"])
	if run == "" || run == p.run {
		return nil
	}
	if message.Truthy(config["stop"]) {
		// End the current run without emitting anything more.
		p.run, p.done = run, true
		tc.StopRecurs()
		return nil
	}
	dur, ok := message.Float(config["duration"])
	if !ok || dur <= 0 {
		return fmt.Errorf("producer: duration must be a positive number of seconds, got %v", config["duration"])
	}
	p.rate, _ = message.Float(config["rate"])
	size, _ := message.Int(config["size"])
	p.pad = strings.Repeat("x", int(max(0, size-PaddingOverhead)))
	p.run, p.seq, p.done = run, 0, false
	p.start = now()
	p.end = p.start + int64(dur*float64(time.Second))
	tc.NamedRecur("produce", produceEvery(p.rate), p.produce)
	return nil
}

// produceEvery is the period of the producer's recurring work: 1 ms, or
// at a fixed rate as often as makes bursts of about openBurst messages
// (at least every 100 µs). An open-loop producer should emit evenly; a
// burst of a whole millisecond's messages (500 at 500 k/s) queues at
// each hop and measures the burst, not the pipeline.
func produceEvery(rate float64) time.Duration {
	if rate <= 0 {
		return time.Millisecond
	}
	return min(max(time.Duration(openBurst/rate*float64(time.Second)), 100*time.Microsecond), time.Millisecond)
}

// openBurst is the burst size produceEvery aims for.
const openBurst = 64

// PaddingOverhead is the encoded size of a producer message without its
// pad (keys, seq, bench_ts, source and the transport's send_ts), so that
// size config gives messages of about that many bytes on the bus.
const PaddingOverhead = 112

func (p *Producer) produce(tc *task.Context) {
	if p.done {
		return
	}
	t := now()
	deadline := t + int64(closedBurst)
	for t < p.end {
		if p.rate > 0 {
			due := int64(float64(t-p.start) / 1e9 * p.rate)
			if p.seq >= due {
				break
			}
		} else if t >= deadline {
			break
		}
		if err := tc.Emit(message.Message{"seq": p.seq, "bench_ts": t, "pad": p.pad}); err != nil {
			tc.Error(err.Error())
			break
		}
		p.seq++
		t = now()
	}
	if t >= p.end {
		p.done = true
		tc.StopRecurs()
	}
	if p.done || t-p.reported >= int64(reportEvery) {
		p.reported = t
		p.report(tc)
	}
}

func (p *Producer) report(tc *task.Context) {
	if err := tc.Send(ReportQueue, message.Message{
		"kind": "producer", "task": tc.Name(), "run": p.run, "emitted": p.seq,
		"done": p.done, "ts": now(), "pid": int64(os.Getpid()),
	}); err != nil {
		tc.Error(err.Error())
	}
}

// Message ignores input.
func (p *Producer) Message(tc *task.Context, msg message.Message) error { return nil }

// reportEvery is how often recording tasks report while busy.
const reportEvery = 200 * time.Millisecond

// Consumer records latencies (see the package doc). With config
// track_seq it also checks the producer's seq against its state (next
// expected seq), counting gaps and duplicates: the state travels with the
// task across migrations, so this checks "nothing lost, nothing
// reordered".
type Consumer struct {
	hist     Histogram
	count    int64
	maxNs    int64
	first    int64 // unix ns of the first message handled by this instance
	reported int64
	track    bool
	gaps     int64
	dups     int64
	dirty    bool
	last     int64 // unix ns of the last message handled
	gapAt    string
	ready    bool
}

// SetConfig reads track_seq and starts the idle-time report. It reports
// "ready" on its first configuration and "config" (with the config's
// stamp, the sender's clock) whenever the config has a stamp.
func (c *Consumer) SetConfig(tc *task.Context, config map[string]any) error {
	t := now()
	c.track = message.Truthy(config["track_seq"])
	if !c.ready {
		c.ready = true
		if err := tc.Send(ReportQueue, message.Message{
			"kind": "ready", "task": tc.Name(), "process": tc.Process(), "pid": int64(os.Getpid()), "ts": t,
		}); err != nil {
			return err
		}
	}
	if stamp, ok := message.Int(config["stamp"]); ok {
		if err := tc.Send(ReportQueue, message.Message{
			"kind": "config", "task": tc.Name(), "stamp": stamp, "ts": t,
		}); err != nil {
			return err
		}
	}
	tc.NamedRecur("report", reportEvery, func(tc *task.Context) {
		if c.dirty {
			c.report(tc, now())
		}
	})
	return nil
}

// Message records one message.
func (c *Consumer) Message(tc *task.Context, msg message.Message) error {
	t := now()
	ts, ok := message.Int(msg["bench_ts"])
	if !ok {
		return fmt.Errorf("consumer: message without bench_ts: %v", msg)
	}
	lat := max(t-ts, 0)
	c.hist.Record(lat)
	c.maxNs = max(c.maxNs, lat)
	c.count++
	c.dirty = true
	c.last = t
	if c.track {
		c.checkSeq(tc.State(), msg)
	}
	if c.first == 0 {
		c.first = t
		c.report(tc, t)
	} else if t-c.reported >= int64(reportEvery) {
		c.report(tc, t)
	}
	return nil
}

// checkSeq compares the message's seq with the next one expected. The
// expectation and the counts live in the state, so they travel with the
// task across migrations and restarts.
func (c *Consumer) checkSeq(st map[string]any, msg message.Message) {
	seq, _ := message.Int(msg["seq"])
	next, _ := message.Int(st["next"])
	switch {
	case seq == next:
	case seq < next:
		n, _ := message.Int(st["dups"])
		st["dups"] = n + 1
	default:
		n, _ := message.Int(st["gaps"])
		st["gaps"] = n + 1
		if _, ok := st["first_gap"]; !ok {
			st["first_gap"] = fmt.Sprintf("seq %d when %d was next (message %d of pid %d)", seq, next, c.count, os.Getpid())
		}
	}
	if seq >= next {
		st["next"] = seq + 1
	}
	c.gaps, _ = message.Int(st["gaps"])
	c.dups, _ = message.Int(st["dups"])
	c.gapAt, _ = st["first_gap"].(string)
}

func (c *Consumer) report(tc *task.Context, t int64) {
	c.reported, c.dirty = t, false
	if err := tc.Send(ReportQueue, message.Message{
		"kind": "consumer", "task": tc.Name(), "process": tc.Process(),
		"pid": int64(os.Getpid()), "ts": t, "first_ts": c.first, "last_ts": c.last,
		"count": c.count, "max_ns": c.maxNs, "hist": c.hist.Sparse(),
		"gaps": c.gaps, "dups": c.dups, "first_gap": c.gapAt,
	}); err != nil {
		tc.Error(err.Error())
	}
}

// relay stamps bench_ts from the transport's send time and emits.
func relay(tc *task.Context, msg message.Message) error {
	if _, ok := msg["bench_ts"]; !ok {
		if meta := msg.Meta(); meta != nil {
			if f, ok := message.Float(meta["send_ts"]); ok {
				msg["bench_ts"] = int64(f * 1e9)
			}
		}
	}
	delete(msg, message.MetaKey)
	return tc.Emit(msg)
}

// idleConfigured counts SetConfig calls of Idle tasks in this process
// (the scale scenario runs its daemon in the bench process and reads it).
var idleConfigured, idleHandled atomic.Int64

// IdleCounts returns how many SetConfig and Message calls Idle tasks in
// this process have had.
func IdleCounts() (configured, handled int64) {
	return idleConfigured.Load(), idleHandled.Load()
}

// Idle is a scale task: it counts, and an external one reports when it is
// configured and, with config report_every_n, every n messages.
type Idle struct {
	n int64
}

// SetConfig counts the configuration and, in an external process, reports
// it.
func (t *Idle) SetConfig(tc *task.Context, config map[string]any) error {
	idleConfigured.Add(1)
	if tc.Process() != "main" {
		return tc.Send(ReportQueue, message.Message{
			"kind": "ready", "task": tc.Name(), "pid": int64(os.Getpid()), "ts": now(),
		})
	}
	return nil
}

// Message counts; in an external process it reports every
// config.report_every_n messages.
func (t *Idle) Message(tc *task.Context, msg message.Message) error {
	idleHandled.Add(1)
	t.n++
	if tc.Process() == "main" {
		return nil
	}
	if every, ok := message.Int(tc.Config()["report_every_n"]); ok && every > 0 && t.n%every == 0 {
		return tc.Send(ReportQueue, message.Message{
			"kind": "handled", "task": tc.Name(), "count": t.n, "ts": now(),
		})
	}
	return nil
}

var (
	_ task.Configurer = (*Producer)(nil)
	_ task.Configurer = (*Consumer)(nil)
	_ task.Inliner    = (*Consumer)(nil)
	_ task.Configurer = (*Idle)(nil)
)

// HandlesInline makes the consumer a task.Inliner: recording a latency is
// short and never blocks (a report every 200 ms is a bus publish, which
// does not wait). Set MM_BENCH_NO_INLINE=1 in the environment of `bench`
// to measure a consumer that is not one.
func (c *Consumer) HandlesInline() bool { return os.Getenv("MM_BENCH_NO_INLINE") == "" }
