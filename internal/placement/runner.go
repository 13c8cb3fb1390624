package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transform"
	"github.com/multimodule/multimodule/transit"
)

// When a placed task saves its checkpoint (state and position together,
// through its Claim) and then acknowledges the messages it covers:
// when no further delivery is waiting, after saveEvery unsaved messages,
// or saveAfter after the first unsaved one, whichever comes first.
const (
	saveEvery = 256
	saveAfter = 50 * time.Millisecond
	// saveRetry is how long a task waits before it tries again a save
	// that failed without being fenced (the bus electing a leader, say).
	saveRetry = 200 * time.Millisecond
)

// RunnerOptions configure a TaskRunner.
type RunnerOptions struct {
	// Bus is the Transit opened with Host ClusterScope: the placed
	// tasks' queues are read from it.
	Bus *transit.Transit
	// Host is the box's host: what placed tasks emit and send goes
	// through it (to the Router, to other tasks wherever they run), and
	// so do their out-of-band records.
	Host *host.Host
	// Sources find the tasks to build.
	Sources registry.Sources
	// Logger receives the runner's logs; nil: slog.Default().
	Logger *slog.Logger
}

// TaskRunner runs placed tasks on this box: one goroutine per task,
// reading the task's queue in the cluster scope, handing each message to
// the task, and saving the task's state with its position in the queue
// through its Claim before it acknowledges the messages the save covers.
// It implements Runner.
type TaskRunner struct {
	opts RunnerOptions
	log  *slog.Logger
	ctx  context.Context // ends with Close: every task stops at once
	stop context.CancelFunc

	mu    sync.Mutex
	tasks map[string]*placed
	wg    sync.WaitGroup
}

var _ Runner = (*TaskRunner)(nil)

// NewRunner returns a TaskRunner; Close it once the Manager is closed.
func NewRunner(opts RunnerOptions) (*TaskRunner, error) {
	if opts.Bus == nil {
		return nil, errors.New("placement: RunnerOptions.Bus is required")
	}
	if opts.Host == nil {
		return nil, errors.New("placement: RunnerOptions.Host is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	return &TaskRunner{opts: opts, log: opts.Logger, ctx: ctx, stop: stop, tasks: map[string]*placed{}}, nil
}

// Close stops every task at once, saving and acknowledging nothing more
// (their messages come again to the next holder), and waits for them.
// The Manager stops the tasks in order (Stop) before it is closed; this
// is for what is left.
func (r *TaskRunner) Close() {
	r.stop()
	r.wg.Wait()
}

// PlacedTask describes a placed task running on this box.
type PlacedTask struct {
	Name    string
	Since   time.Time // when this box took it over
	Epoch   uint64    // the take-over's epoch
	Handled uint64    // messages handled since then
}

// Tasks lists the placed tasks running on this box, by name.
func (r *TaskRunner) Tasks() []PlacedTask {
	r.mu.Lock()
	out := make([]PlacedTask, 0, len(r.tasks))
	for _, p := range r.tasks {
		out = append(out, PlacedTask{Name: p.name, Since: p.since, Epoch: p.claim.Checkpoint().Epoch, Handled: p.handled.Load()})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Runs reports whether task name runs on this box.
func (r *TaskRunner) Runs(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tasks[name] != nil
}

// Start builds task name, gives it its checkpoint's state and cfg, opens
// its queue in the cluster scope and starts its goroutine. It returns
// once the task takes messages, or with the error that kept it from it
// (an unknown task, a constructor or SetConfig that failed, the bus).
func (r *TaskRunner) Start(ctx context.Context, name string, cfg map[string]any, c Claim) error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("placement: start task %s: the runner is closed", name)
	}
	r.mu.Lock()
	if r.tasks[name] != nil {
		r.mu.Unlock()
		return fmt.Errorf("placement: start task %s: it runs here already", name)
	}
	r.mu.Unlock()
	def, ok := r.opts.Sources.Lookup(name)
	if !ok {
		return fmt.Errorf("placement: start task %s: %w", name, r.opts.Sources.NotFound(name))
	}
	t, err := registry.Build(def)
	if err != nil {
		return fmt.Errorf("placement: start task %s: %w", name, err)
	}
	tctx, cancel := context.WithCancel(r.ctx)
	cp := c.Checkpoint()
	p := &placed{
		r: r, name: name, claim: c, t: t, since: time.Now(),
		log:    r.log.With("task", name, "placed", true),
		ctx:    tctx,
		cancel: cancel,
		ctrl:   make(chan func(), 16),
		stopC:  make(chan chan error, 1),
		done:   make(chan struct{}),
		recurs: map[string]*recur{},
		saved:  cp.Position,
		last:   cp.Position,
		passed: r.opts.Host.Counters().Counter(name, host.MetricPassedMessages),
		emit:   r.opts.Host.Counters().Counter(name, host.MetricEmitMessages),
		failed: r.opts.Host.Counters().Counter(name, host.MetricTaskMessageFailure),
	}
	p.tc = task.NewContext(name, p)
	// The task changes its state in place: its own copy, not the
	// claim's.
	p.tc.SetState(registry.CopyConfig(cp.State))
	if err := p.setConfig(cfg); err != nil {
		p.closeTask()
		cancel()
		return fmt.Errorf("placement: start task %s: set config: %w", name, err)
	}
	cons, err := r.opts.Bus.Consume(tctx, name)
	if err != nil {
		p.closeTask()
		cancel()
		return fmt.Errorf("placement: start task %s: consume its queue: %w", name, err)
	}
	p.cons = cons
	r.mu.Lock()
	if r.tasks[name] != nil {
		r.mu.Unlock()
		cons.Stop()
		p.closeTask()
		cancel()
		return fmt.Errorf("placement: start task %s: it runs here already", name)
	}
	r.tasks[name] = p
	r.wg.Add(1)
	r.mu.Unlock()
	go p.loop()
	r.out(oob.ChannelLog, name, fmt.Sprintf("task %s: placed here (epoch %d, from position %d/%d)", name, cp.Epoch, cp.Position.Seq, cp.Position.Member), nil)
	return nil
}

// Stop stops task name for a move: it takes no more messages, handles
// those already fetched, saves its last checkpoint, acknowledges what the
// checkpoint covers and closes the task. It returns the save's error
// (ErrFenced wrapped when another box holds the task now); a task that
// does not run here is no error.
func (r *TaskRunner) Stop(ctx context.Context, name string) error {
	r.mu.Lock()
	p := r.tasks[name]
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case p.stopC <- reply:
	case <-p.done:
		return p.err
	default:
		// A stop is under way already: wait for it.
	}
	select {
	case err := <-reply:
		<-p.done
		return err
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("placement: stop task %s: %w", name, ctx.Err())
	}
}

// Configure gives task name a new config, applied on its goroutine
// between two messages. A config the task rejects is reported on the
// error channel, and the task keeps the one it runs with.
func (r *TaskRunner) Configure(name string, cfg map[string]any) error {
	r.mu.Lock()
	p := r.tasks[name]
	r.mu.Unlock()
	if p == nil {
		return fmt.Errorf("placement: configure task %s: it does not run here", name)
	}
	cfg = registry.CopyConfig(cfg)
	select {
	case p.ctrl <- func() {
		if err := p.setConfig(cfg); err != nil {
			r.out(oob.ChannelError, name, fmt.Sprintf("task %s: set config rejected, keeping the previous one: %v", name, err), nil)
		}
	}:
		return nil
	case <-p.done:
		return fmt.Errorf("placement: configure task %s: it stopped", name)
	}
}

func (r *TaskRunner) out(channel, name, text string, details map[string]any) {
	r.opts.Host.Out(channel, name, text, details)
}

func (r *TaskRunner) forget(p *placed) {
	r.mu.Lock()
	if r.tasks[p.name] == p {
		delete(r.tasks, p.name)
	}
	r.mu.Unlock()
	r.wg.Done()
}

// placed is one placed task running here. The fields below "task
// goroutine only" are touched by loop alone (Start sets them up before
// loop runs).
type placed struct {
	r      *TaskRunner
	name   string
	claim  Claim
	log    *slog.Logger
	since  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	ctrl   chan func()
	stopC  chan chan error
	done   chan struct{}
	err    error // why it ended (set before done is closed)

	handled              atomic.Uint64
	passed, emit, failed *atomic.Uint64

	// task goroutine only
	inHand  host.InHand // the message being handled
	t       task.Task
	tc      *task.Context
	config  map[string]any
	cons    *transit.Consumer
	recurs  map[string]*recur
	pending []*transit.Delivery // handled or skipped, not acknowledged yet (in order)
	unsaved int                 // messages handled since the last save
	dirty   bool                // state may have changed since the last save (recurring work)
	last    Position            // the last message handled
	saved   Position            // what the last save covered
	firstAt time.Time           // when the first unsaved message was handled
	// lease follows what the unsaved messages caused in this process
	// (nil: nothing unsaved); leaseDone: its hold was let go by a save
	// that then failed.
	lease     *host.Lease
	leaseDone bool
	retryAt   time.Time // a failed save is not tried again before this
	saveTimer *time.Timer
	closed    bool
}

type recur struct {
	interval time.Duration
	work     func(*task.Context)
	timer    *time.Timer
	pending  atomic.Bool
	stopped  atomic.Bool
}

// ended tells why loop returned.
type ended int

const (
	endLost    ended = iota // the claim was lost or a save fenced: nothing more saved or acknowledged
	endStopped              // stopped for a move: saved and acknowledged
	endClosed               // the runner closed: nothing more saved or acknowledged
)

func (p *placed) loop() {
	defer p.r.forget(p)
	defer close(p.done)
	defer p.cancel()
	p.saveTimer = time.NewTimer(time.Hour)
	p.saveTimer.Stop()
	defer p.saveTimer.Stop()
	busC := p.cons.C()
	lost := p.claim.Lost()
	timerArmed := false
	for {
		if p.unsaved > 0 || p.dirty || len(p.pending) > 0 {
			now := time.Now()
			switch {
			case now.Before(p.retryAt):
				if !timerArmed {
					p.saveTimer.Reset(p.retryAt.Sub(now))
					timerArmed = true
				}
			case len(busC) == 0 || p.unsaved >= saveEvery || now.Sub(p.firstAt) >= saveAfter:
				if timerArmed {
					p.saveTimer.Stop()
					timerArmed = false
				}
				if !p.save() {
					p.finish(endLost, nil)
					return
				}
				continue
			default:
				if !timerArmed {
					p.saveTimer.Reset(saveAfter - now.Sub(p.firstAt))
					timerArmed = true
				}
			}
		}
		select {
		case <-lost:
			p.finish(endLost, nil)
			return
		case <-p.ctx.Done():
			p.finish(endClosed, nil)
			return
		case f := <-p.ctrl:
			f()
		case reply := <-p.stopC:
			reply <- p.stopForMove(busC, lost)
			return
		case d, ok := <-busC:
			if !ok {
				// The bus closed the queue under the task (the Transit
				// closes): nothing more comes; what is handled is saved.
				busC = nil
				if !p.save() {
					p.finish(endLost, nil)
					return
				}
				continue
			}
			p.take(d)
		case <-p.saveTimer.C:
			timerArmed = false
		}
	}
}

// take handles one delivery, or skips it when it was handled already:
// before the take-over (the checkpoint taken over covers it), or by this
// box (the bus delivering it again while the queue is taken over again
// after a lost connection). Queue order makes that "at or before the last
// message handled". A skipped delivery is acknowledged once a save covers
// it (at once if one does and nothing waits before it).
func (p *placed) take(d *transit.Delivery) {
	if p.last.Covers(d.Seq, d.Member()) {
		if len(p.pending) == 0 && p.saved.Covers(d.Seq, d.Member()) {
			if err := d.Ack(); err != nil {
				p.log.Warn("ack failed; the message may be delivered again (and skipped again)", "error", err)
			}
			return
		}
		p.pending = append(p.pending, d)
		return
	}
	if p.unsaved == 0 {
		p.firstAt = time.Now()
	}
	if p.lease == nil {
		p.lease = host.NewLease()
	}
	p.handle(d.Msg)
	p.last = Position{Seq: d.Seq, Member: d.Member()}
	p.unsaved++
	p.pending = append(p.pending, d)
	p.handled.Add(1)
}

// handle gives one message to the task, or applies a state transform
// (.multimodule.transform) to its state, as a host does.
func (p *placed) handle(m message.Message) {
	if ctl, ok := m[".multimodule"].(map[string]any); ok {
		if t, ok := ctl["transform"].(map[string]any); ok {
			state := p.tc.State()
			if err := transform.Apply(message.Message(state), t, nil); err != nil {
				p.r.out(oob.ChannelError, p.name, fmt.Sprintf("task %s: state transform: %v", p.name, err), nil)
			}
			p.tc.SetState(state)
			p.r.out(oob.ChannelLog, p.name, fmt.Sprintf("task %s: state transformed", p.name), nil)
			return
		}
	}
	p.passed.Add(1)
	p.inHand.Take(m)
	defer p.inHand.Drop()
	if err := p.safeCall("message", func() error { return p.t.Message(p.tc, m) }); err != nil {
		p.failed.Add(1)
		p.r.out(oob.ChannelError, p.name, fmt.Sprintf("task %s: message handler failed: %v", p.name, err), map[string]any{"message": p.inHand.Text()})
	}
}

// save makes what the task did so far durable: first what it sent (on
// the bus), then its state with the position of the last message it
// handled, through the claim; then it acknowledges the messages the
// save covers. It reports false when the task must stop at once (the
// save was fenced: another box holds it now). A save that failed
// otherwise is tried again after saveRetry, nothing acknowledged.
func (p *placed) save() bool {
	if p.unsaved == 0 && !p.dirty {
		p.ackPending() // only deliveries the taken-over checkpoint covers
		return true
	}
	ctx, cancel := context.WithTimeout(p.r.ctx, 30*time.Second)
	defer cancel()
	// What the messages caused in this process (the Router forwarding
	// an emit, say) is handled first, so that whatever it sent on to
	// the bus is in the flush below.
	if l := p.lease; l != nil {
		if !p.leaseDone {
			l.Done()
			p.leaseDone = true
		}
		if !p.waitFree(ctx, l) {
			p.retryAt = time.Now().Add(saveRetry)
			return true
		}
	}
	if err := p.r.opts.Host.Flush(ctx); err != nil {
		p.retryAt = time.Now().Add(saveRetry)
		return true // reported by the host; not saved, not acknowledged
	}
	pos := p.last // never before p.saved
	err := p.claim.Save(ctx, p.tc.State(), pos)
	switch {
	case errors.Is(err, ErrFenced):
		p.r.out(oob.ChannelAlert, p.name, fmt.Sprintf("task %s: another box holds it now; it stops here without saving (its unsaved messages go to the new holder): %v", p.name, err), nil)
		return false
	case err != nil:
		if p.r.ctx.Err() == nil {
			p.log.Warn("saving the checkpoint failed; trying again, nothing acknowledged meanwhile", "error", err)
		}
		p.retryAt = time.Now().Add(saveRetry)
		return true
	}
	p.saved, p.unsaved, p.dirty = pos, 0, false
	p.lease, p.leaseDone = nil, false
	p.ackPending()
	return true
}

// waitFree waits until l is free, and reports whether it is (false: the
// claim was lost or ctx ended first).
func (p *placed) waitFree(ctx context.Context, l *host.Lease) bool {
	wait := 100 * time.Microsecond
	for !l.Free() {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.claim.Lost():
			t.Stop()
			return false
		case <-ctx.Done():
			t.Stop()
			return false
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
	return true
}

// ackPending acknowledges the deliveries the last save (or the taken-over
// checkpoint) covers: all of them, in order.
func (p *placed) ackPending() {
	for _, d := range p.pending {
		if err := d.Ack(); err != nil {
			p.log.Warn("ack failed; the message may be delivered again (and skipped: the checkpoint covers it)", "error", err)
		}
	}
	clear(p.pending)
	p.pending = p.pending[:0]
}

// stopForMove takes no more messages, handles the ones already fetched,
// saves and acknowledges, and closes the task.
func (p *placed) stopForMove(busC <-chan *transit.Delivery, lost <-chan struct{}) error {
	p.cons.Stop()
	for busC != nil {
		select {
		case d, ok := <-busC:
			if !ok {
				busC = nil
				continue
			}
			p.take(d)
		case <-lost:
			p.finish(endLost, nil)
			return fmt.Errorf("placement: stop task %s: %w", p.name, ErrFenced)
		case <-p.ctx.Done():
			p.finish(endClosed, nil)
			return fmt.Errorf("placement: stop task %s: the runner closed", p.name)
		}
	}
	var err error
	for {
		p.retryAt = time.Time{}
		if !p.save() {
			err = fmt.Errorf("placement: stop task %s: %w", p.name, ErrFenced)
			break
		}
		if p.unsaved == 0 && !p.dirty {
			break
		}
		// Not saved (the bus, say): try again until the caller gives up
		// (the runner closes), or the claim is lost.
		t := time.NewTimer(saveRetry)
		select {
		case <-t.C:
			continue
		case <-lost:
			err = fmt.Errorf("placement: stop task %s: %w", p.name, ErrFenced)
		case <-p.ctx.Done():
			err = fmt.Errorf("placement: stop task %s: the runner closed before the last save", p.name)
		}
		t.Stop()
		break
	}
	p.finish(endStopped, err)
	return err
}

// finish stops the task's recurring work, its consumer, and closes it.
// A task that ends without its last save (lost, closed) leaves its
// unacknowledged deliveries to the next holder.
func (p *placed) finish(how ended, err error) {
	p.err = err
	p.cons.Stop()
	p.stopRecurs()
	if how == endLost {
		p.log.Info("placed task lost: stopped without saving")
	}
	p.closeTask()
	if how == endStopped && err == nil {
		p.r.out(oob.ChannelLog, p.name, fmt.Sprintf("task %s: stopped here, its checkpoint saved at %d/%d", p.name, p.saved.Seq, p.saved.Member), nil)
	}
}

// closeTask calls the task's Close once.
func (p *placed) closeTask() {
	if p.closed {
		return
	}
	p.closed = true
	if c, ok := p.t.(task.Closer); ok {
		if err := p.safeCall("close", func() error { return c.Close(p.tc) }); err != nil {
			p.r.out(oob.ChannelError, p.name, fmt.Sprintf("task %s: close failed: %v", p.name, err), nil)
		}
	}
}

// setConfig gives the task cfg (a copy), as a host does.
func (p *placed) setConfig(cfg map[string]any) error {
	if cfg == nil {
		cfg = map[string]any{}
	}
	prev := p.config
	p.config = cfg
	if c, ok := p.t.(task.Configurer); ok {
		if err := p.safeCall("set_config", func() error { return c.SetConfig(p.tc, registry.CopyConfig(cfg)) }); err != nil {
			p.config = prev
			return err
		}
	}
	return nil
}

// safeCall runs task code, turning a panic into an error with the stack.
func (p *placed) safeCall(what string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%s panicked: %v\n%s", what, v, debug.Stack())
		}
	}()
	return f()
}

// The task.Runtime of a placed task.

func (p *placed) Context() context.Context { return p.ctx }
func (p *placed) Config() map[string]any   { return p.config }
func (p *placed) Logger() *slog.Logger     { return p.log }
func (p *placed) Process() string          { return "main" }

func (p *placed) Emit(msg message.Message) error {
	p.emit.Add(1)
	return p.Send(host.RouterName, "", msg)
}

func (p *placed) Send(qname, destination string, msg message.Message) error {
	gave := p.inHand.Sending(msg)
	err := p.r.opts.Host.SendTo(p.ctx, qname, destination, msg, p.lease)
	if err != nil && gave {
		p.inHand.SendFailed()
	}
	return err
}

func (p *placed) Out(channel, text string, details map[string]any) {
	p.r.out(channel, p.name, text, details)
}

func (p *placed) Recur(name string, interval time.Duration, work func(*task.Context)) {
	if interval <= 0 {
		p.r.out(oob.ChannelError, p.name, fmt.Sprintf("task %s: recur %q: interval must be positive, got %v", p.name, name, interval), nil)
		return
	}
	if old, ok := p.recurs[name]; ok {
		old.work = work
		if old.interval == interval {
			return
		}
		old.stopped.Store(true)
		old.timer.Stop()
	}
	rc := &recur{interval: interval, work: work}
	p.recurs[name] = rc
	p.armRecur(rc)
}

func (p *placed) armRecur(rc *recur) {
	rc.timer = time.AfterFunc(rc.interval, func() {
		if rc.stopped.Load() || !rc.pending.CompareAndSwap(false, true) {
			return
		}
		select {
		case p.ctrl <- func() {
			rc.pending.Store(false)
			if rc.stopped.Load() || p.closed {
				return
			}
			p.armRecur(rc) // the next period starts now: runs never pile up
			if p.lease == nil {
				p.lease = host.NewLease()
			}
			if err := p.safeCall("recur", func() error { rc.work(p.tc); return nil }); err != nil {
				p.failed.Add(1)
				p.r.out(oob.ChannelError, p.name, fmt.Sprintf("task %s: recurring work failed: %v", p.name, err), nil)
			}
			// It may have changed the state: saved with the position of
			// the last message handled.
			if !p.dirty && p.unsaved == 0 {
				p.firstAt = time.Now()
			}
			p.dirty = true
			if p.lease == nil {
				p.lease = host.NewLease()
			}
		}:
		case <-p.done:
		}
	})
}

func (p *placed) StopRecur(name string) {
	if rc, ok := p.recurs[name]; ok {
		rc.stopped.Store(true)
		rc.timer.Stop()
		delete(p.recurs, name)
	}
}

func (p *placed) StopRecurs() { p.stopRecurs() }

func (p *placed) stopRecurs() {
	for name := range p.recurs {
		p.StopRecur(name)
	}
}

var _ task.Runtime = (*placed)(nil)
