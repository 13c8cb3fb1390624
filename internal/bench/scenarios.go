package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	benchtasks "github.com/multimodule/multimodule/internal/bench/tasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// route returns a Router route: messages matching match go to each queue.
func route(match map[string]any, queues ...string) map[string]any {
	var fwd []any
	for _, q := range queues {
		fwd = append(fwd, map[string]any{"qname": q})
	}
	return map[string]any{"match": match, "forwards": fwd}
}

// waitReady waits until every consumer named reported ready from the
// wanted side (external: its own process; else the daemon).
func (e *env) waitReady(ctx context.Context, names []string, external bool) error {
	return e.reports.wait(ctx, 60*time.Second, func(r *reports) error {
		for _, n := range names {
			m := r.ready[n]
			if m == nil {
				return fmt.Errorf("%s has not reported ready", n)
			}
			if p, _ := m["process"].(string); (p != "main") != external {
				return fmt.Errorf("%s ready in process %q, want external=%v", n, p, external)
			}
		}
		return nil
	})
}

// readyPID is the pid in task's latest ready report (0: none).
func (e *env) readyPID(task string) int {
	e.reports.mu.Lock()
	defer e.reports.mu.Unlock()
	return int(int64Of(e.reports.ready[task]["pid"]))
}

// producerConfig starts a producer run.
func (e *env) producerConfig(run string, dur time.Duration) map[string]any {
	return map[string]any{"run": run, "duration": dur.Seconds(), "rate": e.opts.Rate, "size": int64(e.opts.Size)}
}

// flow runs the producer → Router → consumers pipeline already
// configured (consumers ready) and measures it.
func (e *env) flow(ctx context.Context, consumers []string) (Result, error) {
	warm, dur := e.opts.warmup(), e.opts.Duration
	started := time.Now()
	stopProgress := e.progress(ctx, started, warm+dur, consumers)
	defer stopProgress()
	if err := e.configure(ctx, map[string]any{"Producer": e.producerConfig("run1", warm+dur)}); err != nil {
		return Result{}, err
	}
	if err := sleep(ctx, warm); err != nil {
		return Result{}, err
	}
	// Baseline: a report of every consumer sent after the warm-up.
	mark := time.Now().UnixNano()
	if err := e.reports.wait(ctx, 30*time.Second, func(r *reports) error {
		for _, c := range consumers {
			if m := r.consumer[c]; m == nil || int64Of(m["ts"]) < mark {
				return fmt.Errorf("no report from %s since the warm-up ended", c)
			}
		}
		return nil
	}); err != nil {
		return Result{}, err
	}
	base := e.reports.snapshot(consumers)
	sc, err := e.startScrape(ctx)
	if err != nil {
		return Result{}, err
	}
	e.procs.start()
	err = sleep(ctx, time.Until(started.Add(warm+dur)))
	procs := e.procs.stop()
	scrapes, scrapeErr := sc.stop()
	if err != nil {
		return Result{}, err
	}
	// The producer has stopped (or is about to); wait until every
	// message it emitted has been handled, or nothing moves any more.
	var emitted int64
	var last int64 = -1
	lastMove := time.Now()
	err = e.reports.wait(ctx, 120*time.Second, func(r *reports) error {
		p := r.producer
		if p == nil || !message.Truthy(p["done"]) || p["run"] != "run1" {
			return errors.New("producer not done yet")
		}
		emitted = int64Of(p["emitted"])
		var got int64
		for _, c := range consumers {
			if m := r.consumer[c]; m != nil {
				got += int64Of(m["count"])
			}
		}
		if got >= emitted*int64(len(consumers)) {
			return nil
		}
		if got != last {
			last, lastMove = got, time.Now()
		} else if time.Since(lastMove) > 5*time.Second {
			return nil // stuck: report what arrived
		}
		return fmt.Errorf("received %d of %d", got, emitted*int64(len(consumers)))
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		// The deadline passed while the backlog drained: still report.
		e.log.Warn("bench: consumers did not catch up", "error", err)
	}
	end := e.reports.snapshot(consumers)
	w := measure(base, end)
	res := Result{Processes: procs}
	w.fill(&res, len(consumers))
	res.Extras = map[string]any{
		"sent":     emitted,
		"received": w.received,
		"lost":     max(emitted*int64(len(consumers))-w.received, 0),
		"window_s": round3(w.seconds),
		"size":     e.opts.Size,
		"rate":     e.opts.Rate,
	}
	if len(consumers) > 1 {
		res.Extras["deliveries_per_sec"] = round1(float64(w.count) / w.seconds)
	}
	if sc != nil {
		res.Extras["scrapes"] = scrapes.done
		res.Extras["scrape_errors"] = scrapes.failed
		if scrapeErr != nil {
			return res, fmt.Errorf("%d of %d /metrics scrapes failed: %w", scrapes.failed, scrapes.done, scrapeErr)
		}
	}
	return res, nil
}

// quiet waits until task has sent no report for a second (it reports
// every 200 ms while it handles messages).
func (e *env) quiet(ctx context.Context, task string) error {
	var lastTS int64 = -1
	seen := time.Now()
	return poll(ctx, 120*time.Second, func() error {
		m := e.reports.snapshot([]string{task})[task]
		ts := int64Of(m["ts"])
		if ts != lastTS {
			lastTS, seen = ts, time.Now()
		}
		if time.Since(seen) < time.Second {
			return fmt.Errorf("%s still reporting", task)
		}
		return nil
	})
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func runInproc(ctx context.Context, e *env) (Result, error) {
	return e.pipeline(ctx, map[string]any{
		"Router":   map[string]any{"routes": []any{route(map[string]any{"source": "Producer"}, "Consumer")}},
		"Consumer": map[string]any{},
	})
}

// pipeline configures a pipeline ending in an internal Consumer, waits
// until the Consumer is ready and measures the flow through it.
func (e *env) pipeline(ctx context.Context, cfg map[string]any) (Result, error) {
	if err := e.configure(ctx, cfg); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, []string{"Consumer"}, false); err != nil {
		return Result{}, err
	}
	return e.flow(ctx, []string{"Consumer"})
}

func runExternal(ctx context.Context, e *env) (Result, error) {
	if err := e.configure(ctx, map[string]any{
		"Router":   map[string]any{"routes": []any{route(map[string]any{"source": "Producer"}, "Consumer")}},
		"Consumer": map[string]any{"is_external": true},
	}); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, []string{"Consumer"}, true); err != nil {
		return Result{}, err
	}
	// The pid its ready report gave: its status file, which names it
	// too, may be written only after the measured window has started.
	e.procs.add("external Consumer", e.readyPID("Consumer"))
	return e.flow(ctx, []string{"Consumer"})
}

// runFanout: the Router with benchtasks.FanoutRoutes, 4 of 10 matching.
func runFanout(ctx context.Context, e *env) (Result, error) {
	routes := benchtasks.FanoutRoutes()
	cfg := map[string]any{"Router": map[string]any{"routes": routes}}
	for _, c := range benchtasks.ConsumerNames {
		cfg[c] = map[string]any{}
	}
	if err := e.configure(ctx, cfg); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, benchtasks.ConsumerNames, false); err != nil {
		return Result{}, err
	}
	res, err := e.flow(ctx, benchtasks.ConsumerNames)
	if res.Extras != nil {
		res.Extras["routes"], res.Extras["matching_forwards"] = 10, 4
	}
	return res, err
}

// ErrExecUnavailable is returned by the exec scenario when the PyEcho
// exec task (examples/exec) cannot be found.
var ErrExecUnavailable = errors.New("bench exec: the PyEcho exec task is not available")

// runExec: producer → Router → PyEcho (a Python co-process of the daemon,
// over the exec-task protocol) → Router → consumer.
func runExec(ctx context.Context, e *env) (Result, error) {
	probeRoute := route(map[string]any{"bench_probe": true}, execProbeQueue)
	probeRoute[".router_control"] = map[string]any{"short_circuit": true}
	if err := e.configure(ctx, map[string]any{
		"Router": map[string]any{"routes": []any{
			probeRoute,
			route(map[string]any{"source": "Producer"}, "PyEcho"),
			route(map[string]any{"source": "PyEcho"}, "Consumer"),
		}},
		"PyEcho":   map[string]any{},
		"Consumer": map[string]any{},
	}); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, []string{"Consumer"}, false); err != nil {
		return Result{}, err
	}
	if err := e.execWarm(ctx); err != nil {
		return Result{}, err
	}
	return e.flow(ctx, []string{"Consumer"})
}

// execProbeQueue receives PyEcho's answers to the warm-up probes.
const execProbeQueue = "bench_exec_probe"

// execWarm waits until PyEcho is loaded, answers, and has nothing left in
// its bus queue, before the producer starts. An exec task loads on its
// own (its co-process' start and handshake take a while): until it is
// loaded, and then until its bus queue is drained, what the Router sends
// it goes through the bus — and a closed-loop producer, which only
// slows down for full mailboxes, would keep that queue full for the whole
// run (the host then never switches the task to its in-memory mailbox,
// and the run measures the bus, one message at a time).
func (e *env) execWarm(ctx context.Context) error {
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	cons, err := e.tr.Consume(cctx, execProbeQueue)
	if err != nil {
		return err
	}
	defer cons.Stop()
	deadline := time.After(60 * time.Second)
	for n := int64(0); ; n++ {
		if err := e.tr.Send(ctx, "PyEcho", message.Message{"bench_probe": true, "n": n}, transit.SendOptions{}); err != nil {
			return err
		}
		select {
		case d, ok := <-cons.C():
			if !ok {
				return errors.New("bench exec: the probe consumer stopped")
			}
			_ = d.Ack()
		case <-deadline:
			return errors.New("bench exec: PyEcho did not answer within 60 s")
		case <-ctx.Done():
			return ctx.Err()
		}
		st, err := e.tr.Stat(ctx, "PyEcho")
		if err == nil && st.Msgs == 0 {
			// The host moves the task to its mailbox a moment after its
			// bus queue is empty (it checks every few ms).
			return sleep(ctx, 50*time.Millisecond)
		}
	}
}

// runConfig times config changes (sent on the control queue, stamped with
// the send time) to the SetConfig that sees them, then measures an idle
// daemon's CPU.
func runConfig(ctx context.Context, e *env) (Result, error) {
	if err := e.configure(ctx, map[string]any{
		"Router":   map[string]any{"routes": []any{route(map[string]any{"source": "Producer"}, "Consumer")}},
		"Consumer": map[string]any{},
	}); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, []string{"Consumer"}, false); err != nil {
		return Result{}, err
	}
	var lat []float64 // ms
	for i := range e.opts.Configs {
		stamp := time.Now().UnixNano()
		if err := e.configure(ctx, map[string]any{"Consumer": map[string]any{"stamp": stamp}}); err != nil {
			return Result{}, err
		}
		if err := e.reports.wait(ctx, 30*time.Second, func(r *reports) error {
			for _, m := range r.configs {
				if int64Of(m["stamp"]) == stamp {
					lat = append(lat, float64(int64Of(m["ts"])-stamp)/1e6)
					return nil
				}
			}
			return fmt.Errorf("config change %d not applied yet", i)
		}); err != nil {
			return Result{}, err
		}
	}
	slices.Sort(lat)
	// Idle: nothing sent; Consumer and Router loaded.
	if err := sleep(ctx, time.Second); err != nil {
		return Result{}, err
	}
	e.procs.start()
	if err := sleep(ctx, e.opts.Duration); err != nil {
		return Result{}, err
	}
	res := Result{Processes: e.procs.stop()}
	res.Extras = map[string]any{
		"config_changes":    len(lat),
		"config_p50_ms":     round3(lat[len(lat)/2]),
		"config_max_ms":     round3(lat[len(lat)-1]),
		"idle_window_s":     e.opts.Duration.Seconds(),
		"idle_daemon_cpu_%": res.Processes[0].CPUPercent,
	}
	return res, nil
}

// runRestart kills the external consumer with SIGKILL while the producer
// runs at a steady rate, Kills times, and times each kill until the
// replacement process handled its first message.
func runRestart(ctx context.Context, e *env) (Result, error) {
	kills := e.opts.Kills
	if kills <= 0 {
		kills = 10
	}
	if e.opts.Rate <= 0 {
		e.opts.Rate = 2000
	}
	if err := e.configure(ctx, map[string]any{
		"Router":   map[string]any{"routes": []any{route(map[string]any{"source": "Producer"}, "Consumer")}},
		"Consumer": map[string]any{"is_external": true},
	}); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, []string{"Consumer"}, true); err != nil {
		return Result{}, err
	}
	total := time.Duration(kills+2) * (e.opts.KillGap + 5*time.Second)
	if err := e.configure(ctx, map[string]any{"Producer": e.producerConfig("restart", total)}); err != nil {
		return Result{}, err
	}
	started := time.Now()
	stopProgress := e.progress(ctx, started, time.Duration(kills)*e.opts.KillGap, []string{"Consumer"})
	defer stopProgress()
	e.procs.start()
	var times []float64 // ms
	for k := range kills {
		// The external writes its status file just after it reports ready:
		// give it a moment.
		var pid int
		_ = poll(ctx, 5*time.Second, func() error {
			if pid = e.externalPID("Consumer"); pid == 0 {
				return errors.New("no status yet")
			}
			return nil
		})
		if pid == 0 {
			return Result{}, fmt.Errorf("kill %d: no external Consumer process running", k+1)
		}
		e.procs.add(fmt.Sprintf("external Consumer #%d", k+1), pid)
		// Healthy and handling messages before the kill.
		if err := e.reports.wait(ctx, 30*time.Second, func(r *reports) error {
			for _, f := range r.firsts {
				if f.pid == int64(pid) {
					return nil
				}
			}
			return fmt.Errorf("external Consumer pid %d has not handled a message", pid)
		}); err != nil {
			return Result{}, err
		}
		if err := sleep(ctx, e.opts.KillGap); err != nil {
			return Result{}, err
		}
		killed := time.Now().UnixNano()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return Result{}, fmt.Errorf("kill %d of pid %d: %w", k+1, pid, err)
		}
		if err := e.reports.wait(ctx, 60*time.Second, func(r *reports) error {
			for _, f := range r.firsts {
				if f.pid != int64(pid) && f.ts > killed {
					times = append(times, float64(f.ts-killed)/1e6)
					return nil
				}
			}
			return fmt.Errorf("no replacement for killed pid %d has handled a message", pid)
		}); err != nil {
			return Result{}, fmt.Errorf("kill %d: %w", k+1, err)
		}
	}
	// Steady state of the last replacement, for its rate and latency.
	if err := sleep(ctx, min(e.opts.Duration, 5*time.Second)); err != nil {
		return Result{}, err
	}
	procs := e.procs.stop()
	end := e.reports.snapshot([]string{"Consumer"})
	if err := e.configure(ctx, map[string]any{"Producer": map[string]any{"run": "stop", "stop": true}}); err != nil {
		return Result{}, err
	}
	w := measure(nil, end)
	res := Result{Processes: procs}
	w.fill(&res, 1)
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	res.Extras = map[string]any{
		"kills":             len(times),
		"restart_ms":        times,
		"restart_median_ms": round3(sorted[len(sorted)/2]),
		"restart_max_ms":    round3(sorted[len(sorted)-1]),
		"rate":              e.opts.Rate,
		"kill_gap_s":        e.opts.KillGap.Seconds(),
		"latency_note":      "latency covers the last consumer process only",
	}
	return res, nil
}

// runMigrate moves a consumer internal → external → internal under a
// steady producer, Kills round trips, timing each move from the config
// change to the first message handled at the new place; the consumer
// checks every seq against its state (nothing lost, nothing reordered).
func runMigrate(ctx context.Context, e *env) (Result, error) {
	rounds := e.opts.Kills
	if rounds <= 0 {
		rounds = 3
	}
	if e.opts.Rate <= 0 {
		e.opts.Rate = 2000
	}
	cfg := func(external bool) map[string]any {
		c := map[string]any{"track_seq": true}
		if external {
			c["is_external"] = true
		}
		return map[string]any{"Consumer": c}
	}
	if err := e.configure(ctx, map[string]any{
		"Router":   map[string]any{"routes": []any{route(map[string]any{"source": "Producer"}, "Consumer")}},
		"Consumer": cfg(false)["Consumer"],
	}); err != nil {
		return Result{}, err
	}
	if err := e.waitReady(ctx, []string{"Consumer"}, false); err != nil {
		return Result{}, err
	}
	total := time.Duration(rounds)*2*(e.opts.Duration+10*time.Second) + time.Minute
	if err := e.configure(ctx, map[string]any{"Producer": e.producerConfig("migrate", total)}); err != nil {
		return Result{}, err
	}
	started := time.Now()
	stopProgress := e.progress(ctx, started, time.Duration(rounds)*2*e.opts.Duration, []string{"Consumer"})
	defer stopProgress()
	e.procs.start()
	var toExt, toInt []float64
	move := func(external bool) (float64, error) {
		if err := sleep(ctx, e.opts.Duration); err != nil { // steady state at the current place
			return 0, err
		}
		changed := time.Now().UnixNano()
		if err := e.configure(ctx, cfg(external)); err != nil {
			return 0, err
		}
		var ms float64
		err := e.reports.wait(ctx, 60*time.Second, func(r *reports) error {
			for _, f := range r.firsts {
				if f.ts > changed && (f.process != "main") == external {
					ms = float64(f.ts-changed) / 1e6
					return nil
				}
			}
			return fmt.Errorf("no message handled at the new place (external=%v) yet", external)
		})
		if external {
			e.procs.add("external Consumer", e.externalPID("Consumer"))
		}
		return ms, err
	}
	for i := range rounds {
		ms, err := move(true)
		if err != nil {
			return Result{}, fmt.Errorf("round %d, internal → external: %w", i+1, err)
		}
		toExt = append(toExt, ms)
		if ms, err = move(false); err != nil {
			return Result{}, fmt.Errorf("round %d, external → internal: %w", i+1, err)
		}
		toInt = append(toInt, ms)
	}
	procs := e.procs.stop()
	if err := e.configure(ctx, map[string]any{"Producer": map[string]any{"run": "stop", "stop": true}}); err != nil {
		return Result{}, err
	}
	// Let the last messages arrive so the seq check covers them: wait
	// until the consumer stops reporting (it reports while it has news).
	if err := e.quiet(ctx, "Consumer"); err != nil {
		return Result{}, err
	}
	final := e.reports.snapshot([]string{"Consumer"})
	w := measure(nil, final)
	res := Result{Processes: procs}
	w.fill(&res, 1)
	res.MsgsPerSec = e.opts.Rate
	res.Extras = map[string]any{
		"rounds":             rounds,
		"to_external_ms":     toExt,
		"to_internal_ms":     toInt,
		"to_external_max_ms": round3(slices.Max(toExt)),
		"to_internal_max_ms": round3(slices.Max(toInt)),
		"seq_gaps":           w.gaps,
		"first_gap":          final["Consumer"]["first_gap"],
		"seq_duplicates":     w.dups,
		"rate":               e.opts.Rate,
		"latency_note":       "latency covers the consumer's last place only",
	}
	return res, nil
}

// runScale configures Tasks internal and Externals external tasks at
// once, times their start, measures the idle daemon (for --duration,
// after 2 s of settling), then sends every
// task messages and times until all are handled.
func runScale(ctx context.Context, e *env) (Result, error) {
	nInt, nExt := min(e.opts.Tasks, benchtasks.MaxIdle), min(e.opts.Externals, benchtasks.MaxExternals)
	const perTask = 100
	cfg := map[string]any{}
	for i := range nInt {
		cfg[benchtasks.IdleName(i)] = map[string]any{}
	}
	for i := range nExt {
		cfg[benchtasks.ExtName(i)] = map[string]any{"is_external": true, "report_every_n": perTask}
	}
	conf0, handled0 := benchtasks.IdleCounts()
	stopProfile := phaseProfile("configure")
	t0 := time.Now()
	if err := e.configure(ctx, cfg); err != nil {
		stopProfile()
		return Result{}, err
	}
	var internalS, externalS float64
	if err := poll(ctx, 120*time.Second, func() error {
		if c, _ := benchtasks.IdleCounts(); c-conf0 < int64(nInt) {
			return fmt.Errorf("%d of %d internal tasks configured", c-conf0, nInt)
		}
		return nil
	}); err != nil {
		stopProfile()
		return Result{}, err
	}
	internalS = time.Since(t0).Seconds()
	stopProfile()
	if err := e.reports.wait(ctx, 120*time.Second, func(r *reports) error {
		n := 0
		for i := range nExt {
			if r.ready[benchtasks.ExtName(i)] != nil {
				n++
			}
		}
		if n < nExt {
			return fmt.Errorf("%d of %d externals ready", n, nExt)
		}
		return nil
	}); err != nil {
		return Result{}, err
	}
	externalS = time.Since(t0).Seconds()
	for i := range nExt {
		e.procs.add("external "+benchtasks.ExtName(i), e.externalPID(benchtasks.ExtName(i)))
	}
	// Idle, after Settle.
	settle := e.opts.Settle
	if settle <= 0 {
		settle = 2 * time.Second
	}
	if err := sleep(ctx, settle); err != nil {
		return Result{}, err
	}
	idle := e.opts.Duration // the idle window: --duration
	stopProfile = phaseProfile("idle")
	e.procs.start()
	if err := sleep(ctx, idle); err != nil {
		stopProfile()
		return Result{}, err
	}
	idleProcs := e.procs.stop()
	stopProfile()
	// Busy: perTask messages to every task, through the bus.
	stopProfile = phaseProfile("busy")
	defer stopProfile()
	e.procs.start()
	tb := time.Now()
	var names []string
	for i := range nInt {
		names = append(names, benchtasks.IdleName(i))
	}
	for i := range nExt {
		names = append(names, benchtasks.ExtName(i))
	}
	for n := range perTask {
		for _, q := range names {
			if err := e.tr.SendAsync(ctx, q, message.Message{"n": n}, transitOpts); err != nil {
				return Result{}, err
			}
		}
	}
	if err := e.tr.Flush(ctx); err != nil {
		return Result{}, err
	}
	if err := poll(ctx, 300*time.Second, func() error {
		if _, h := benchtasks.IdleCounts(); h-handled0 < int64(nInt*perTask) {
			return fmt.Errorf("internal tasks handled %d of %d", h-handled0, nInt*perTask)
		}
		e.reports.mu.Lock()
		defer e.reports.mu.Unlock()
		for i := range nExt {
			if e.reports.handled[benchtasks.ExtName(i)] < perTask {
				return fmt.Errorf("external %s has not handled %d", benchtasks.ExtName(i), perTask)
			}
		}
		return nil
	}); err != nil {
		return Result{}, err
	}
	busyS := time.Since(tb).Seconds()
	stopProfile()
	busyProcs := e.procs.stop()
	total := (nInt + nExt) * perTask
	res := Result{Processes: busyProcs, MsgsPerSec: round1(float64(total) / busyS)}
	var extIdleCPU, extIdleRSS float64
	for _, p := range idleProcs {
		if len(p.Name) > 9 && p.Name[:9] == "external " {
			extIdleCPU += p.CPUPercent
			extIdleRSS += float64(p.RSSBytes)
		}
	}
	res.Extras = map[string]any{
		"internal_tasks":            nInt,
		"external_tasks":            nExt,
		"internal_configured_s":     round3(internalS),
		"externals_ready_s":         round3(externalS),
		"idle_window_s":             idle.Seconds(),
		"idle_after_s":              settle.Seconds(),
		"idle_daemon_cpu_%":         idleProcs[0].CPUPercent,
		"idle_daemon_rss_mb":        round1(float64(idleProcs[0].RSSBytes) / (1 << 20)),
		"idle_bus_cpu_%":            idleProcs[1].CPUPercent,
		"idle_externals_cpu_%_sum":  round1(extIdleCPU),
		"idle_externals_rss_mb_avg": round1(extIdleRSS / float64(max(nExt, 1)) / (1 << 20)),
		"busy_messages":             total,
		"busy_s":                    round3(busyS),
		"note":                      "processes: figures while busy; msgs/s: every task's queue through the bus; daemon RSS includes the bench harness",
	}
	return res, nil
}

// runCLI: `send --lines` processes put batches on the Relay task's queue;
// Relay emits; the Router forwards to queue BenchOut, read by one
// `recv --follow` process. Latency is from the send process' publish
// (the transport's send_ts, copied by Relay) to this process reading the
// line recv printed.
func runCLI(ctx context.Context, e *env) (Result, error) {
	if err := e.configure(ctx, map[string]any{
		"Router": map[string]any{"routes": []any{route(map[string]any{"source": "Relay"}, "BenchOut")}},
		"Relay":  map[string]any{},
	}); err != nil {
		return Result{}, err
	}
	recv := exec.Command(e.exe, "-s", e.state, "recv", "--follow", "BenchOut")
	recv.Env = os.Environ()
	out, err := recv.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	recv.Stderr = nil
	if err := recv.Start(); err != nil {
		return Result{}, fmt.Errorf("start recv: %w", err)
	}
	e.mu.Lock()
	e.children = append(e.children, recv.Process)
	e.mu.Unlock()
	e.procs.add("recv --follow", recv.Process.Pid)
	got := make(chan int64, 4096) // latencies, ns
	go readLatencies(out, got)

	batch := 1000
	interval := time.Duration(0)
	if e.opts.Rate > 0 {
		interval = 100 * time.Millisecond
		batch = max(1, int(e.opts.Rate/10))
	}
	pad := make([]byte, max(0, e.opts.Size-benchtasks.PaddingOverhead))
	for i := range pad {
		pad[i] = 'x'
	}
	var h benchtasks.Histogram
	var received, sent int64
	var firstRecv, lastRecv time.Time
	var sendUser, sendSys time.Duration
	var sendMaxRSS int64
	sendRuns := 0
	drain := func(block bool) bool {
		for {
			var lat int64
			if block {
				select {
				case lat = <-got:
				case <-time.After(10 * time.Second):
					return false
				}
			} else {
				select {
				case lat = <-got:
				default:
					return true
				}
			}
			now := time.Now()
			if firstRecv.IsZero() {
				firstRecv = now
			}
			lastRecv = now
			received++
			h.Record(lat)
			if block && received >= sent {
				return true
			}
		}
	}
	started := time.Now()
	e.procs.start()
	stopProgress := e.progress(ctx, started, e.opts.Duration, nil)
	for seq := int64(0); time.Since(started) < e.opts.Duration; {
		next := time.Now().Add(interval)
		var lines []byte
		for range batch {
			lines = append(lines, `{"seq":`...)
			lines = strconv.AppendInt(lines, seq, 10)
			lines = append(lines, `,"pad":"`...)
			lines = append(lines, pad...)
			lines = append(lines, "\"}\n"...)
			seq++
		}
		send := exec.CommandContext(ctx, e.exe, "-s", e.state, "send", "--lines", "Relay", "-")
		send.Env = os.Environ()
		send.Stdin = bytesReader(lines)
		if outb, err := send.CombinedOutput(); err != nil {
			stopProgress()
			return Result{}, fmt.Errorf("send: %w: %s", err, outb)
		}
		sendRuns++
		sendUser += send.ProcessState.UserTime()
		sendSys += send.ProcessState.SystemTime()
		if ru, ok := send.ProcessState.SysUsage().(*syscall.Rusage); ok {
			sendMaxRSS = max(sendMaxRSS, ru.Maxrss*1024)
		}
		sent += int64(batch)
		drain(false)
		if err := sleep(ctx, time.Until(next)); err != nil {
			stopProgress()
			return Result{}, err
		}
	}
	sendWindow := time.Since(started)
	procs := e.procs.stop()
	stopProgress()
	if received < sent {
		drain(true)
	}
	res := Result{Processes: append(procs, Process{
		Name:       fmt.Sprintf("send ×%d (total)", sendRuns),
		CPUPercent: round1((sendUser + sendSys).Seconds() / sendWindow.Seconds() * 100),
		RSSBytes:   uint64(sendMaxRSS),
	})}
	if secs := lastRecv.Sub(started).Seconds(); secs > 0 {
		res.MsgsPerSec = round1(float64(received) / secs)
	}
	res.P50us = float64(h.Quantile(0.5)) / 1e3
	res.P90us = float64(h.Quantile(0.9)) / 1e3
	res.P99us = float64(h.Quantile(0.99)) / 1e3
	res.Maxus = float64(h.Quantile(1)) / 1e3
	res.Extras = map[string]any{
		"sent":            sent,
		"received":        received,
		"lost":            max(sent-received, 0),
		"send_processes":  sendRuns,
		"batch":           batch,
		"send_process_ms": round3(sendWindow.Seconds() * 1000 / float64(max(sendRuns, 1))),
		"size":            e.opts.Size,
	}
	return res, nil
}

// phaseProfile starts a CPU profile of one phase of scale ("configure":
// from the config sent until every internal task is configured; "idle":
// the idle window; "busy": the busy phase) when MM_BENCH_SCALE_CPUPROFILE is "PHASE:FILE" (not
// with --cpuprofile, which profiles the whole run); it returns the
// function that ends it.
func phaseProfile(phase string) func() {
	want, path, _ := strings.Cut(os.Getenv("MM_BENCH_SCALE_CPUPROFILE"), ":")
	if want != phase || path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: idle profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "bench: idle profile:", err)
		f.Close()
		return func() {}
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
