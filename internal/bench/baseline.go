package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	benchtasks "github.com/multimodule/multimodule/internal/bench/tasks"
	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
	"github.com/multimodule/multimodule/trust"
)

// The baselines do the work of inproc and external by hand, without
// MultiModule, so that a scenario's figure can be read as a ratio to what
// plain Go or plain JetStream give on the same machine in the same run
// (Compare).

// baselineOf names the baseline each comparable scenario is measured
// against.
var baselineOf = map[string]string{
	"inproc":   "baseline-chan",
	"external": "baseline-jetstream",
}

// sink is the consumer side of a baseline: it records the latency of the
// messages whose emit time falls in the measured window [from, to) and
// counts every message.
type sink struct {
	from, to int64 // unix ns
	hist     benchtasks.Histogram
	inWindow int64
	total    atomic.Int64
	bad      atomic.Int64 // messages without a readable bench_ts
}

func (s *sink) record(msg message.Message) {
	t := time.Now().UnixNano()
	ts, ok := message.Int(msg["bench_ts"])
	if !ok {
		s.bad.Add(1)
		s.total.Add(1)
		return
	}
	if ts >= s.from && ts < s.to {
		s.hist.Record(max(t-ts, 0))
		s.inWindow++
	}
	s.total.Add(1)
}

// result fills a Result from the sink; call it once the consumer stopped.
func (s *sink) result(sent int64, window time.Duration, rate float64, size int) Result {
	w := window.Seconds()
	res := Result{MsgsPerSec: float64(s.inWindow) / w}
	res.P50us = float64(s.hist.Quantile(0.50)) / 1e3
	res.P90us = float64(s.hist.Quantile(0.90)) / 1e3
	res.P99us = float64(s.hist.Quantile(0.99)) / 1e3
	res.Maxus = float64(s.hist.Quantile(1)) / 1e3
	received := s.total.Load()
	res.Extras = map[string]any{
		"sent":     sent,
		"received": received,
		"lost":     max(sent-received, 0),
		"window_s": round3(w),
		"size":     size,
		"rate":     rate,
	}
	if n := s.bad.Load(); n > 0 {
		res.Extras["bad_messages"] = n
	}
	return res
}

// pacer emits in the producer's rhythm (benchtasks.Producer): closed loop
// as fast as emit returns; open loop at rate, in bursts every 100 µs to
// 1 ms of about 64 messages.
type pacer struct {
	start, end int64 // unix ns
	rate       float64
}

// run calls emit(seq, now) until the end; emit returns false to stop.
// flush, when set, runs after each open-loop burst. It returns the
// number of messages emitted.
func (p pacer) run(ctx context.Context, emit func(seq, now int64) bool, flush func()) int64 {
	var seq int64
	if p.rate <= 0 {
		for t := time.Now().UnixNano(); t < p.end; t = time.Now().UnixNano() {
			if !emit(seq, t) {
				return seq
			}
			seq++
			if seq&1023 == 0 && ctx.Err() != nil {
				return seq
			}
		}
		return seq
	}
	every := min(max(time.Duration(64/p.rate*float64(time.Second)), 100*time.Microsecond), time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		t := time.Now().UnixNano()
		if t >= p.end {
			return seq
		}
		due := int64(float64(t-p.start) / 1e9 * p.rate)
		for ; seq < due && t < p.end; t = time.Now().UnixNano() {
			if !emit(seq, t) {
				return seq
			}
			seq++
		}
		if flush != nil {
			flush()
		}
		select {
		case <-ctx.Done():
			return seq
		case <-tick.C:
		}
	}
}

// padFor returns the padding that makes a producer message (seq,
// bench_ts, source and pad) encode to about size bytes.
func padFor(size int) string {
	probe := message.Message{"seq": int64(1e6), "bench_ts": time.Now().UnixNano(), "source": "Producer", "pad": ""}
	b, err := message.Marshal(probe)
	if err != nil {
		return strings.Repeat("x", max(0, size-benchtasks.PaddingOverhead))
	}
	return strings.Repeat("x", max(0, size-len(b)))
}

// chanCapacity is the buffer of each channel of baseline-chan: the
// host's default mailbox size.
const chanCapacity = 1000

// runBaselineChan is inproc's work done by hand: a producer goroutine
// makes each message, a router goroutine matches it against the route
// {source: Producer} and clones it (maps.Clone, as a forward takes its
// own copy), a consumer goroutine records its latency; two buffered
// channels between them.
func runBaselineChan(ctx context.Context, opts *Options) (Result, error) {
	pat, err := match.Compile(map[string]any{"source": "Producer"})
	if err != nil {
		return Result{}, err
	}
	if os.Getenv("GOGC") == "" {
		// The daemon's garbage collector keeps its heap goal at
		// daemon.DefaultHeapFloor or more (started by the first daemon in
		// a process, it stays on); give the channels the same goal, so
		// that a run alone and a run after inproc (--vs-baseline)
		// collect alike. With a live heap far under the floor, as here,
		// that is this GC percentage.
		defer debug.SetGCPercent(debug.SetGCPercent(int(daemon.DefaultHeapFloor * 100 / runtimeHeapMinimum)))
	}
	pad := padFor(opts.Size)
	warm, dur := opts.warmup(), opts.Duration
	start := time.Now()
	p := pacer{start: start.UnixNano(), end: start.Add(warm + dur).UnixNano(), rate: opts.Rate}
	s := &sink{from: start.Add(warm).UnixNano(), to: p.end}

	toRouter := make(chan message.Message, chanCapacity)
	toConsumer := make(chan message.Message, chanCapacity)
	var unmatched atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // router
		defer wg.Done()
		defer close(toConsumer)
		for m := range toRouter {
			if !pat.Match(m) {
				unmatched.Add(1)
				continue
			}
			toConsumer <- maps.Clone(m)
		}
	}()
	go func() { // consumer
		defer wg.Done()
		for m := range toConsumer {
			s.record(m)
		}
	}()
	procs := newProcSet()
	procs.add("bench", os.Getpid())
	window := make(chan []Process, 1)
	go func() {
		if sleep(ctx, warm) != nil {
			window <- nil
			return
		}
		procs.start()
		_ = sleep(ctx, time.Until(start.Add(warm+dur)))
		window <- procs.stop()
	}()
	sent := p.run(ctx, func(seq, now int64) bool {
		toRouter <- message.Message{"seq": seq, "bench_ts": now, "pad": pad, "source": "Producer"}
		return true
	}, nil)
	gcPercent := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(gcPercent) // the setting the run had
	close(toRouter)
	wg.Wait()
	res := s.result(sent, dur, opts.Rate, opts.Size)
	res.Processes = <-window
	if v := gcPercent[0].Value; v.Kind() == metrics.KindUint64 {
		res.Extras["gc_percent"] = int64(v.Uint64())
	}
	if n := unmatched.Load(); n > 0 {
		return res, fmt.Errorf("baseline-chan: %d messages did not match the route", n)
	}
	return res, ctx.Err()
}

// runtimeHeapMinimum is the Go runtime's minimum heap goal at GOGC=100.
const runtimeHeapMinimum = 4 << 20

// DefaultBatch is the number of messages baseline-jetstream publishes
// before it waits for the bus' acknowledgements.
const DefaultBatch = 64

// baselineStream is the stream baseline-jetstream creates on the bus.
const (
	baselineStream  = "MMBENCHRAW"
	baselineSubject = "mmbenchraw.q"
)

// runBaselineJetStream is external's work done with plain JetStream: a
// producer publishes each message (encoded by message.Marshal) to a
// file-stored stream, Batch messages asynchronously and then waits for
// their acknowledgements (Batch 1: one synchronous publish per message);
// a durable pull consumer on a connection of its own decodes each
// message (message.Unmarshal), records its latency, and acknowledges
// every Batch-th message, which acknowledges the ones before it (Batch 1:
// every message). Producer and consumer run in this process; the bus is the scenario's
// embedded bus (the daemon started beside it stays idle).
func runBaselineJetStream(ctx context.Context, e *env) (Result, error) {
	opts := e.opts
	batch := max(opts.Batch, 1)
	dir := filepath.Join(e.state, "transit")
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		return Result{}, fmt.Errorf("read the bus info: %w", err)
	}
	tok, err := trust.ReadFile("bus token", filepath.Join(dir, transit.BusTokenFile))
	if err != nil {
		return Result{}, err
	}
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(bi.URL, nats.Token(strings.TrimSpace(string(tok))), nats.Name(name))
		if err != nil {
			return nil, fmt.Errorf("connect to the bus %s: %w", bi.URL, err)
		}
		return nc, nil
	}
	pubNC, err := connect("baseline-jetstream producer")
	if err != nil {
		return Result{}, err
	}
	defer pubNC.Close()
	subNC, err := connect("baseline-jetstream consumer")
	if err != nil {
		return Result{}, err
	}
	defer subNC.Close()
	pubJS, err := jetstream.New(pubNC, jetstream.WithPublishAsyncMaxPending(2*batch))
	if err != nil {
		return Result{}, err
	}
	subJS, err := jetstream.New(subNC)
	if err != nil {
		return Result{}, err
	}
	// Acknowledgements are batched too: with batches, the consumer
	// acknowledges every batch-th message, which acknowledges all before
	// it (AckAll); one at a time, each message on its own.
	ackPolicy := jetstream.AckAllPolicy
	if batch <= 1 {
		ackPolicy = jetstream.AckExplicitPolicy
	}
	stream, err := pubJS.CreateStream(ctx, jetstream.StreamConfig{
		Name:      baselineStream,
		Subjects:  []string{baselineSubject},
		Retention: jetstream.InterestPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  1,
	})
	if err != nil {
		return Result{}, fmt.Errorf("create stream %s: %w", baselineStream, err)
	}
	if _, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "sink",
		AckPolicy: ackPolicy,
	}); err != nil {
		return Result{}, fmt.Errorf("create consumer: %w", err)
	}
	// The consumer's own connection pulls and acknowledges.
	cons, err := subJS.Consumer(ctx, baselineStream, "sink")
	if err != nil {
		return Result{}, fmt.Errorf("look up consumer: %w", err)
	}

	pad := padFor(opts.Size)
	warm, dur := opts.warmup(), opts.Duration
	start := time.Now()
	p := pacer{start: start.UnixNano(), end: start.Add(warm + dur).UnixNano(), rate: opts.Rate}
	s := &sink{from: start.Add(warm).UnixNano(), to: p.end}
	var consErr atomic.Pointer[error]
	moved := make(chan struct{}, 1)
	var (
		mu      sync.Mutex // the sink and unacked: the handler's, then the result's
		unacked jetstream.Msg
		n       int
	)
	ack := func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			consErr.CompareAndSwap(nil, &err)
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		msg, err := message.Unmarshal(m.Data())
		if err != nil {
			s.bad.Add(1)
			s.total.Add(1)
		} else {
			s.record(msg)
		}
		if n++; n%batch == 0 {
			ack(m)
			unacked = nil
		} else {
			unacked = m
		}
		select {
		case moved <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return Result{}, fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()

	window := make(chan []Process, 1)
	go func() {
		if sleep(ctx, warm) != nil {
			window <- nil
			return
		}
		e.procs.start()
		_ = sleep(ctx, time.Until(start.Add(warm+dur)))
		window <- e.procs.stop()
	}()
	var pubErr error
	pending := 0
	waitAcks := func() {
		if pending == 0 || pubErr != nil {
			return
		}
		select {
		case <-pubJS.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			pubErr = errors.New("the bus did not acknowledge a batch within 30 s")
		case <-ctx.Done():
			pubErr = ctx.Err()
		}
		pending = 0
	}
	sent := p.run(ctx, func(seq, now int64) bool {
		data, err := message.Marshal(message.Message{"seq": seq, "bench_ts": now, "pad": pad, "source": "Producer"})
		if err != nil {
			pubErr = err
			return false
		}
		if batch <= 1 {
			if _, err := pubJS.Publish(ctx, baselineSubject, data); err != nil {
				pubErr = fmt.Errorf("publish: %w", err)
				return false
			}
			return true
		}
		if _, err := pubJS.PublishAsync(baselineSubject, data); err != nil {
			pubErr = fmt.Errorf("publish: %w", err)
			return false
		}
		if pending++; pending >= batch {
			waitAcks()
		}
		return pubErr == nil
	}, waitAcks)
	waitAcks()
	procs := <-window
	// Wait until the consumer has everything, or nothing moved for 5 s.
	stall := time.NewTimer(5 * time.Second)
	defer stall.Stop()
wait:
	for s.total.Load() < sent {
		select {
		case <-moved:
			stall.Reset(5 * time.Second)
		case <-stall.C:
			e.log.Warn("bench: baseline consumer did not catch up", "received", s.total.Load(), "sent", sent)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	cc.Stop()
	<-cc.Closed()
	mu.Lock() // the handler's last call has returned
	defer mu.Unlock()
	if unacked != nil {
		ack(unacked)
	}
	res := s.result(sent, dur, opts.Rate, opts.Size)
	res.Processes = procs
	res.Extras["batch"] = max(batch, 1)
	if pubErr != nil {
		return res, pubErr
	}
	if p := consErr.Load(); p != nil {
		return res, fmt.Errorf("acknowledge: %w", *p)
	}
	return res, ctx.Err()
}
