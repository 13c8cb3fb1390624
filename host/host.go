// Package host runs tasks inside one process: the daemon, or the external
// process of one task. It gives each loaded task its own goroutine and
// bounded mailbox, delivers messages (from the in-process mailbox and from
// the task's bus queue), applies config, runs recurring work, saves state,
// and reports failures without ever letting a task take the process down.
//
// A Host knows which tasks exist (registry.Sources) and decides with its
// Placement function which of them it hosts. Tasks are loaded lazily: when
// they are configured, when a message is sent to them from this process,
// or when messages wait in their bus queue.
package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// Placement says whether and how this process hosts a task.
type Placement int

// The placements.
const (
	NotHere        Placement = iota // not hosted in this process (messages go to the bus)
	HostAndConsume                  // hosted here and the owner of its bus queue
	HostLocalOnly                   // hosted here for local deliveries only (stateless copies in externals)
)

// OutFunc writes an out-of-band record.
type OutFunc func(channel, taskName, text string, details map[string]any)

// Options configure a Host.
type Options struct {
	// Process names this process: "main" for the daemon, or the task an
	// external process hosts. It appears in logs and status.
	Process string
	Transit *transit.Transit
	Store   *store.Store
	Sources registry.Sources
	Logger  *slog.Logger
	// Out receives every out-of-band record; nil logs them through Logger.
	Out OutFunc
	// Placement decides which tasks this process hosts; nil hosts every
	// task not configured with is_external, owning its bus queue.
	Placement func(name string, def task.Definition, config map[string]any) Placement
	// MailboxSize bounds each task's in-memory queue (default 1000).
	MailboxSize int
	// SaveInterval is how often stateful state is saved (default 1 s;
	// a task's intervals.save_state overrides it).
	SaveInterval time.Duration
	// ScanInterval is how often bus queues are checked for messages
	// waiting for tasks that are not loaded (default 1 s). Negative: never,
	// for a process that hosts only the tasks it is configured with and
	// local copies it loads when it sends to them (an external process);
	// each check is a request the bus answers by counting every queue.
	ScanInterval time.Duration
	// Counters collects the admin metrics; nil makes a new set.
	Counters *Counters
	// ReadOnlyConfig keeps configs out of the state directory (external
	// processes read configs the daemon saved) except for one: when the
	// task this process hosts rejects the config in its file, the config
	// it runs with is written back (only accepted configs stay saved).
	ReadOnlyConfig bool
	// CheckConfig, when set, may refuse a task's new config (reserved
	// names, is_external for a task no source has): a refused config is
	// neither recorded nor saved, and ConfigureAll returns the error as a
	// *ConfigError. It is called outside any lock.
	CheckConfig func(name string, config map[string]any) error
	// NotFound, when set, gives the error for a configured task that no
	// source has (the daemon adds the namespaces that have it and were
	// not given); nil: Sources.NotFound.
	NotFound func(name string) error
	// OnConfigChanged is called (outside any lock) after a task's config
	// changed and its hosting here was reconciled; the daemon's external
	// supervisor hooks in here.
	OnConfigChanged func(name string, config map[string]any)
	// InFlight, in an external process, is told of every bus delivery of
	// the task it hosts (the task named by Process), so that its
	// supervisor learns which message was being handled when the process
	// died, and so that a message that killed it too often is
	// dead-lettered instead of handled again.
	InFlight InFlight
}

// InFlight watches the bus deliveries of one task (Options.InFlight). Its
// methods run on the task's goroutine, once per message: they must be
// cheap.
type InFlight interface {
	// Begin is called before the task handles d, and says whether it
	// may (the zero Verdict).
	Begin(d *transit.Delivery) Verdict
	// End is called once the delivery of the last Begin is dealt with:
	// handled by the task (handled true), or, as its Verdict said,
	// skipped or stored in the dead-letter queue (handled false).
	End(handled bool)
}

// Verdict is what an InFlight says of a bus delivery.
type Verdict struct {
	// Skip: an earlier process of the task dealt with it already (it
	// went to the dead-letter queue); it is acknowledged, not handled.
	Skip bool
	// DeadLetter, when not empty: it must not be handled; it is moved to
	// the dead-letter queue with this reason and Details (and
	// acknowledged), counted as a failed message and reported on the
	// error channel.
	DeadLetter string
	Details    map[string]any
}

// Host runs tasks in this process. Create it with New, start it with Run.
type Host struct {
	opts     Options
	log      *slog.Logger
	tr       *transit.Transit
	counters *Counters
	self     procid.Identity

	ctx    context.Context // lifetime of the host; set by Run
	cancel context.CancelFunc

	hosted atomic.Pointer[map[string]*runner] // copy-on-write view for the delivery fast path

	mu       sync.Mutex
	runners  map[string]*runner
	configs  map[string]map[string]any // the desired config of every configured task
	confKeys map[string]string         // canonical JSON of configs, to detect changes
	failures map[string]*loadFailure   // backoff of tasks that failed to load
	loading  map[string]*loadJob       // tasks being loaded (outside the lock)
	commits  map[string]*configCommit  // config changes awaiting their task's verdict (ConfigureAllContext)
	closing  bool

	// Bus sends (SendAsync) and what Flush covered, counted so that a
	// flush knows whether the sends made before it are stored (see
	// flushAsync): asyncSent counts the sends returned, asyncFlushed the
	// ones a successful Flush covered. flushSem: one Flush at a time.
	asyncSent    atomic.Uint64
	asyncFlushed atomic.Uint64
	flushSem     chan struct{}
	// flushDue: a send since the run loop's last flush waits for one.
	// The first such send sets it and pokes the run loop, which arms its
	// flush timer; an idle host has no timer armed (see Run).
	flushDue atomic.Bool
	// poked wakes the run loop: a send is waiting for its flush, or a
	// load failed and its retry is to be timed.
	poked chan struct{}
	// loopWakes counts the run loop's wake-ups (tests: an idle host does
	// not wake).
	loopWakes atomic.Uint64
	outside   sync.Map // qname → *outsideSends: slow-path sends in progress

	saveCh chan saveJob
	// statusSem bounds the status files written at load at once.
	statusSem chan struct{}
	// lastLoad is when the last load began (unix nanoseconds): status
	// files wait for a burst of loads to end (waitLoadsQuiet).
	lastLoad atomic.Int64
	// The process's usage last sampled for a status file (usage).
	usageMu   sync.Mutex
	usageAt   time.Time
	usageLast procid.Usage
	wg        sync.WaitGroup
	loads     sync.WaitGroup // loads running (see ensureLoaded)
}

type loadFailure struct {
	count int
	next  time.Time
	err   error
}

// LoadFailure describes a task whose last load failed: how many loads
// failed in a row, the next try (not before), and the last error. An
// unknown task's error wraps ErrUnknownTask.
type LoadFailure struct {
	Count int
	Next  time.Time
	Err   error
}

// ErrClosed is returned by operations on a host that is shutting down.
var ErrClosed = errors.New("host: shutting down")

// New returns a Host; call Run to start it.
func New(opts Options) (*Host, error) {
	if opts.Transit == nil {
		return nil, errors.New("host: Options.Transit is required")
	}
	if opts.Store == nil {
		return nil, errors.New("host: Options.Store is required")
	}
	if opts.Process == "" {
		opts.Process = "main"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MailboxSize <= 0 {
		opts.MailboxSize = 1000
	}
	if opts.SaveInterval <= 0 {
		opts.SaveInterval = time.Second
	}
	if opts.ScanInterval == 0 {
		opts.ScanInterval = time.Second
	}
	if opts.Counters == nil {
		opts.Counters = NewCounters()
	}
	if opts.Placement == nil {
		opts.Placement = DefaultPlacement
	}
	self, err := procid.Self()
	if err != nil {
		return nil, fmt.Errorf("host: identify this process: %w", err)
	}
	h := &Host{
		opts:      opts,
		log:       opts.Logger.With("process", opts.Process),
		tr:        opts.Transit,
		counters:  opts.Counters,
		self:      self,
		runners:   map[string]*runner{},
		configs:   map[string]map[string]any{},
		confKeys:  map[string]string{},
		failures:  map[string]*loadFailure{},
		loading:   map[string]*loadJob{},
		commits:   map[string]*configCommit{},
		saveCh:    make(chan saveJob, 64),
		statusSem: make(chan struct{}, 2),
		flushSem:  make(chan struct{}, 1),
		poked:     make(chan struct{}, 1),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	empty := map[string]*runner{}
	h.hosted.Store(&empty)
	return h, nil
}

// DefaultPlacement hosts every task that is not configured to run
// external, as the owner of its bus queue.
func DefaultPlacement(name string, def task.Definition, config map[string]any) Placement {
	if IsExternal(config) {
		return NotHere
	}
	return HostAndConsume
}

// ClusterScope is the host scope on the bus that holds the queues of
// placed tasks (IsPlaced): a placed task's queue is addressed by its name
// alone, whichever box runs it. No box may be called this.
const ClusterScope = "_cluster"

// IsPlaced reports whether a task config places the task in a cluster of
// boxes (it has host, hosts or placement): such a task is run by the box
// holding its lease (package internal/placement), never by a Host, and
// every send to it that names no destination goes to its queue in
// ClusterScope.
func IsPlaced(config map[string]any) bool {
	if config == nil {
		return false
	}
	if _, ok := config["host"]; ok {
		return true
	}
	if _, ok := config["hosts"]; ok {
		return true
	}
	_, ok := config["placement"]
	return ok
}

// IsExternal reports whether a task config asks to run the task as its
// own process (is_external, Perl truth).
func IsExternal(config map[string]any) bool {
	return config != nil && message.Truthy(config["is_external"])
}

// DefaultMaxCrashRedeliveries is how many times a message in flight when
// its task's process died is handed to the task again, when the task's
// config has no max_crash_redeliveries.
const DefaultMaxCrashRedeliveries = 1

// MaxCrashRedeliveries returns a task config's max_crash_redeliveries:
// how many times a message that was being handled when the task's
// process died is handed to the task again before it is dead-lettered
// (checkFrameworkKeys refuses anything but a whole number ≥ 0).
func MaxCrashRedeliveries(config map[string]any) int {
	if f, ok := message.Float(config["max_crash_redeliveries"]); ok && f >= 0 && f <= 1e6 {
		return int(f)
	}
	return DefaultMaxCrashRedeliveries
}

// Counters returns the admin metrics of this host.
func (h *Host) Counters() *Counters { return h.counters }

// Flush waits until every bus send this host's tasks (and SendTo) made
// before the call is stored by the bus, reporting failures on the error
// channel: whoever acknowledges a bus message whose handling sent
// messages calls it first.
func (h *Host) Flush(ctx context.Context) error { return h.flushAsync(ctx) }

// Transit returns the host's transport.
func (h *Host) Transit() *transit.Transit { return h.tr }

// Store returns the host's state directory.
func (h *Host) Store() *store.Store { return h.opts.Store }

// Logger returns the host's logger.
func (h *Host) Logger() *slog.Logger { return h.log }

// flushEvery is how long a bus send (SendAsync) that no runner flushes
// waits at most for the run loop to flush it.
const flushEvery = 50 * time.Millisecond

// Run starts the host's background work (state saving, scanning the bus
// for waiting messages, flushing) and blocks until ctx is done. It does
// not unload tasks: call Shutdown for an orderly exit. It sets no
// process-wide policy (the garbage collector's is the program's).
//
// An idle host does not wake up: the flush timer is armed by the first
// send after a flush, the retry timer only while a configured task's
// load failed, and the bus is scanned every ScanInterval only when
// ScanInterval is positive.
func (h *Host) Run(ctx context.Context) error {
	h.wg.Add(1)
	go h.saver()
	var scanC <-chan time.Time
	if h.opts.ScanInterval > 0 {
		scan := time.NewTicker(h.opts.ScanInterval)
		defer scan.Stop()
		scanC = scan.C
		h.scan()
	}
	flush := time.NewTimer(flushEvery)
	flush.Stop()
	defer flush.Stop()
	flushArmed := false
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	timeRetry := true // the next retry is to be timed again
	for {
		if !flushArmed && h.flushDue.Load() {
			flush.Reset(flushEvery)
			flushArmed = true
		}
		if timeRetry {
			timeRetry = false
			if d, ok := h.nextRetry(); ok {
				retry.Reset(d)
			} else {
				retry.Stop()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.ctx.Done():
			return nil
		case <-scanC:
			h.scan()
		case <-h.poked:
			timeRetry = true
		case <-retry.C:
			h.retryFailed()
			timeRetry = true
		case <-flush.C:
			flushArmed = false
			// Cleared before looking: a send counted after this pokes
			// again, and one counted before is covered below.
			h.flushDue.Store(false)
			if len(h.flushSem) == 0 {
				// Not while a runner's flush is in progress: this loop
				// would wait for it, and the runner reports its failures.
				_ = h.flushAsync(ctx)
			}
			if h.asyncFlushed.Load() < h.asyncSent.Load() {
				// Failed, or the runner's flush did not cover every send:
				// try again.
				h.flushDue.Store(true)
			}
		}
		h.loopWakes.Add(1)
	}
}

// nextRetry returns how long until the first load retry of a configured
// task is due (retryFailed), and false when none is.
func (h *Host) nextRetry() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var first time.Time
	for name, f := range h.failures {
		if _, configured := h.configs[name]; configured && (first.IsZero() || f.next.Before(first)) {
			first = f.next
		}
	}
	if first.IsZero() {
		return 0, false
	}
	// retryFailed retries the loads whose back-off ended before it looks:
	// a moment after the first one ends.
	return max(time.Until(first), 0) + time.Millisecond, true
}

// poke wakes the run loop (see Host.poked).
func (h *Host) poke() {
	select {
	case h.poked <- struct{}{}:
	default:
	}
}

// out writes an out-of-band record for taskName.
func (h *Host) out(channel, taskName, text string, details map[string]any) {
	if h.opts.Out != nil {
		h.opts.Out(channel, taskName, text, details)
		return
	}
	args := []any{"channel", channel, "task", taskName}
	for k, v := range details {
		args = append(args, k, v)
	}
	switch channel {
	case oob.ChannelError, oob.ChannelAlert:
		h.log.Error(text, args...)
	case oob.ChannelDebug:
		h.log.Debug(text, args...)
	default:
		h.log.Info(text, args...)
	}
}

// Out writes an out-of-band record on behalf of the framework.
func (h *Host) Out(channel, taskName, text string, details map[string]any) {
	h.out(channel, taskName, text, details)
}

// sentAsync counts a bus send (SendAsync) once it returned: the Transit
// has it then, and a Flush that starts after this covers it.
// The first send after the run loop's flush arms its flush timer.
func (h *Host) sentAsync() {
	h.asyncSent.Add(1)
	if !h.flushDue.Load() && h.flushDue.CompareAndSwap(false, true) {
		h.poke()
	}
}

// flushAsync waits until every bus publish this host made with SendAsync
// before the call is acknowledged by the bus, reporting failures. If
// another flush is in progress, it waits for that one and then flushes
// itself unless that one covered its sends: returning at once (as when a
// "pending" flag was taken by the flush in progress) would let a runner
// acknowledge bus messages whose results were not stored yet, lost if
// the process died then.
func (h *Host) flushAsync(ctx context.Context) error {
	sent := h.asyncSent.Load()
	if h.asyncFlushed.Load() >= sent {
		return nil
	}
	select {
	case h.flushSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("host: flush: waiting for the flush in progress: %w", ctx.Err())
	}
	defer func() { <-h.flushSem }()
	if h.asyncFlushed.Load() >= sent {
		return nil // covered by the flush that was in progress
	}
	// Every send counted now was accepted by the Transit: the Flush
	// below covers them.
	upto := h.asyncSent.Load()
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := h.tr.Flush(fctx); err != nil {
		// Not covered: the next flush waits for them again.
		if ctx.Err() == nil {
			h.out(oob.ChannelError, h.opts.Process, "bus publish failed: "+err.Error(), nil)
		}
		return err
	}
	h.asyncFlushed.Store(upto) // under flushSem: only grows
	return nil
}

// configKey is the canonical form of a config for change detection
// (encoding/json sorts map keys).
func configKey(cfg map[string]any) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Sprintf("unencodable:%p", cfg)
	}
	return string(b)
}
