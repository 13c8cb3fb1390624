// Package tasktest unit-tests a task without a daemon, the way
// net/http/httptest tests a handler without a server: a Recorder is the
// task's host, and records what the task does.
//
//	rec := tasktest.New("Counter", map[string]any{"intervals": map[string]any{"report": 1}})
//	if err := rec.Start(&Counter{}); err != nil { t.Fatal(err) }
//	_ = rec.Message(message.Message{"x": 1})
//	_ = rec.RunRecur("report")
//	got := rec.Emitted() // [{count: 1, source: Counter}]
//
// A Recorder drives the task through the lifecycle the task package
// documents — Start (state, then SetConfig), Configure (SetConfig again
// when the config changes by content), Message, RunRecur, Close, Restart —
// one call at a time, turning a panic into an error as the host does. It
// records:
//
//   - Emitted: the messages the task emitted to the Router;
//   - Sent / Sends: the messages it sent straight to queues;
//   - Recurs: its recurring jobs and their intervals (RunRecur runs one by
//     hand: nothing runs by itself, so tests need no clock);
//   - Records / Texts: its out-of-band records (Log, Alert, Out, …, and its
//     Logger's records);
//   - State / SavedState: its state, live and as the host saves it.
//
// Messages go through the checks the host's sends make: a value that is
// not JSON-compatible, or a bad queue or host name, is the error the task
// gets from Emit or Send, and what is recorded is what the receiver gets
// (numbers as int64 or float64, a deep copy). For tests with real
// processes, a real bus and the Router's config, use package mmtest.
package tasktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// RouterQueue is the queue a task's Emit delivers to: the built-in
// Router's.
const RouterQueue = "Router"

// ErrNotStarted is returned by the calls that need a task (Message,
// Configure, RunRecur, Close, Restart) before Start.
var ErrNotStarted = errors.New("tasktest: no task: call Start first")

// ErrNotConfigured is returned by Message and RunRecur while the task has
// no accepted config (its first SetConfig failed): the host keeps its
// messages waiting and does not run its recurring work until a config is
// accepted.
var ErrNotConfigured = errors.New("tasktest: the task has no accepted config (its messages would wait in its queue)")

// Send is one message a task sent straight to a queue (Context.Send or
// SendTo).
type Send struct {
	Queue       string          // the queue
	Destination string          // the host scope; empty for this host
	Message     message.Message // what the receiver gets
}

// Record is one out-of-band record of a task.
type Record struct {
	Channel string         // "log", "debug", "alert", "error" or the task's own
	Text    string         // the record's text
	Details map[string]any // key/value details; nil when none
}

// Recorder runs one task as its host would, and records what it does. Its
// methods may be called from any goroutine; the calls into the task run
// one at a time, as in the daemon, so task code needs no locks. The zero
// value is not usable: call New.
type Recorder struct {
	name string

	// call serialises the calls into the task (Start, Configure, Message,
	// RunRecur, Close, Restart): task code runs one call at a time.
	call sync.Mutex
	t    task.Task
	// configured: a config was accepted; closed: Close ran.
	configured, closed bool

	mu        sync.Mutex // guards what follows; task code may take it (through rt)
	tc        *task.Context
	ctx       context.Context
	cancel    context.CancelFunc
	config    map[string]any
	configKey string
	emitted   []message.Message
	sends     []Send
	recurs    map[string]*recur
	records   []Record
	saved     map[string]any // the state Close saved, nil before
}

type recur struct {
	interval time.Duration
	work     func(*task.Context)
}

// New returns a Recorder for a task called name (its queue's name) with
// config. A nil config is an empty map, the config a task loaded only
// because messages wait for it gets. The Recorder keeps config as the
// task's current config (Context.Config returns it, so do not change it
// afterwards); SetConfig gets a copy.
func New(name string, config map[string]any) *Recorder {
	if config == nil {
		config = map[string]any{}
	}
	r := &Recorder{name: name, config: config, configKey: configKey(config), recurs: map[string]*recur{}}
	r.newContext(nil)
	return r
}

// newContext gives the task a fresh Context (and context.Context) holding
// state. r.mu need not be held: only New and Restart call it, with the
// task stopped.
func (r *Recorder) newContext(state map[string]any) {
	ctx, cancel := context.WithCancel(context.Background())
	tc := task.NewContext(r.name, rt{r})
	tc.SetState(state)
	r.mu.Lock()
	r.tc, r.ctx, r.cancel = tc, ctx, cancel
	r.mu.Unlock()
}

// TC returns the task's Context: the tc that task code receives. Tests of
// a helper that takes a *task.Context can use it without Start. Restart
// replaces it.
func (r *Recorder) TC() *task.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tc
}

// Start runs the first steps of the lifecycle for t: t gets the state the
// Context holds (set it with TC().SetState first to start from a saved
// state), then SetConfig with a copy of the config, if t is a
// task.Configurer. A task that is not a Configurer is configured at once.
// A SetConfig that fails or panics leaves the task unconfigured: its error
// is returned, Message and RunRecur return ErrNotConfigured until
// Configure succeeds.
func (r *Recorder) Start(t task.Task) error {
	if t == nil {
		return fmt.Errorf("tasktest: start %s: nil task", r.name)
	}
	r.call.Lock()
	defer r.call.Unlock()
	if r.t != nil {
		return fmt.Errorf("tasktest: start %s: already started (use Restart for a new instance)", r.name)
	}
	r.t = t
	r.mu.Lock()
	cfg := r.config
	r.mu.Unlock()
	return r.setConfig(cfg, configKey(cfg), true)
}

// Configure gives the task a new config, as the host does when the
// task's config changes: SetConfig is called only when config differs by
// content from the current one (an identical resend does nothing). A
// SetConfig that fails or panics keeps the previous config, and its error
// is returned. A nil config is an empty map.
func (r *Recorder) Configure(config map[string]any) error {
	if config == nil {
		config = map[string]any{}
	}
	r.call.Lock()
	defer r.call.Unlock()
	if r.t == nil {
		return ErrNotStarted
	}
	if r.closed {
		return fmt.Errorf("tasktest: configure %s: the task is closed", r.name)
	}
	key := configKey(config)
	r.mu.Lock()
	same := r.configured && key == r.configKey
	r.mu.Unlock()
	if same {
		return nil
	}
	return r.setConfig(config, key, false)
}

// setConfig makes cfg current and calls SetConfig; on failure the previous
// config comes back. r.call is held.
func (r *Recorder) setConfig(cfg map[string]any, key string, first bool) error {
	r.mu.Lock()
	prev, prevKey := r.config, r.configKey
	r.config, r.configKey = cfg, key
	tc := r.tc
	r.mu.Unlock()
	if c, ok := r.t.(task.Configurer); ok {
		err := safeCall("set_config", func() error { return c.SetConfig(tc, registry.CopyConfig(cfg)) })
		if err != nil {
			if !first {
				r.mu.Lock()
				r.config, r.configKey = prev, prevKey
				r.mu.Unlock()
			}
			return fmt.Errorf("task %s: set config rejected: %w", r.name, err)
		}
	}
	r.configured = true
	return nil
}

// Message delivers msg to the task, as the host delivers a message from
// its queue: msg is first checked and converted as a send to the task
// would (a value that is not JSON-compatible is an error, numbers become
// int64 or float64), then Message is called. The task may change or keep
// msg, as in the daemon. The handler's error, or its panic (with the
// stack), is returned; the host would report it and go on with the next
// message, and so may the test.
func (r *Recorder) Message(msg message.Message) error {
	m, err := message.Normalize(msg)
	if err != nil {
		return fmt.Errorf("tasktest: message for %s: %w", r.name, err)
	}
	r.call.Lock()
	defer r.call.Unlock()
	if err := r.ready(); err != nil {
		return err
	}
	return safeCall("message", func() error { return r.t.Message(r.TC(), m) })
}

// ready reports why the task cannot get a message or run recurring work.
// r.call is held.
func (r *Recorder) ready() error {
	switch {
	case r.t == nil:
		return ErrNotStarted
	case r.closed:
		return fmt.Errorf("tasktest: %s is closed", r.name)
	case !r.configured:
		return ErrNotConfigured
	}
	return nil
}

// RunRecur runs the task's recurring job name once, as the host does when
// its interval has passed. Nothing runs by itself: a test runs each job
// when it wants to. Names of NamedRecur are the task's own; Recur's are in
// Recurs. It fails when no such job is scheduled (never, or cancelled by
// its stop function or StopRecurs), and returns the job's panic as an error.
func (r *Recorder) RunRecur(name string) error {
	r.call.Lock()
	defer r.call.Unlock()
	if err := r.ready(); err != nil {
		return err
	}
	r.mu.Lock()
	rc, ok := r.recurs[name]
	tc := r.tc
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("tasktest: %s has no recurring job %q (scheduled: %v)", r.name, name, slices.Sorted(maps.Keys(r.Recurs())))
	}
	return safeCall("recur "+name, func() error { rc.work(tc); return nil })
}

// Close unloads the task as the host does: its recurring jobs stop, its
// state is saved (SavedState), Close is called if the task is a
// task.Closer, and the Context's context.Context is cancelled. It returns
// the error of Close or of saving the state. Calling Close again does
// nothing.
func (r *Recorder) Close() error {
	r.call.Lock()
	defer r.call.Unlock()
	if r.t == nil {
		return ErrNotStarted
	}
	return r.close()
}

// close is Close with r.call held.
func (r *Recorder) close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.mu.Lock()
	clear(r.recurs)
	tc, cancel := r.tc, r.cancel
	r.mu.Unlock()
	saved, saveErr := roundTrip(tc.State())
	if saveErr != nil {
		saveErr = fmt.Errorf("task %s: state is not JSON-compatible, not saved: %w", r.name, saveErr)
	} else {
		r.mu.Lock()
		r.saved = saved
		r.mu.Unlock()
	}
	var closeErr error
	if c, ok := r.t.(task.Closer); ok {
		if err := safeCall("close", func() error { return c.Close(tc) }); err != nil {
			closeErr = fmt.Errorf("task %s: close: %w", r.name, err)
		}
	}
	cancel()
	return errors.Join(saveErr, closeErr)
}

// Restart stops the running task as Close does (if it is not closed yet)
// and starts t in its place, as the host does after a restart of a
// stateful task: t gets a fresh Context holding the saved state and the
// current config. The records so far stay. When the old task's state
// cannot be saved (it is not JSON-compatible) or its Close fails, that
// error is returned and t is not started. For a stateless task, which
// starts again with empty state, use a new Recorder.
func (r *Recorder) Restart(t task.Task) error {
	if t == nil {
		return fmt.Errorf("tasktest: restart %s: nil task", r.name)
	}
	r.call.Lock()
	defer r.call.Unlock()
	if r.t == nil {
		return ErrNotStarted
	}
	if err := r.close(); err != nil {
		return err
	}
	r.mu.Lock()
	saved, cfg := r.saved, r.config
	r.mu.Unlock()
	r.newContext(saved)
	r.t, r.closed, r.configured = t, false, false
	return r.setConfig(cfg, configKey(cfg), true)
}

// Config returns the task's current config: the one its last accepted
// SetConfig got.
func (r *Recorder) Config() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.config
}

// State returns the task's state map, live (what Context.State returns to
// the task).
func (r *Recorder) State() map[string]any { return r.TC().State() }

// SavedState returns the task's state as the host would save it now and
// give it back after a restart: a JSON round trip, so numbers come back
// as int64 or float64. It fails, as the host's save does, when the state
// is not JSON-compatible, naming the bad value.
func (r *Recorder) SavedState() (map[string]any, error) {
	m, err := roundTrip(r.State())
	if err != nil {
		return nil, fmt.Errorf("task %s: state is not JSON-compatible: %w", r.name, err)
	}
	return m, nil
}

// Emitted returns the messages the task emitted (to the Router), oldest
// first, each with source set by Emit.
func (r *Recorder) Emitted() []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.emitted)
}

// Sends returns every message the task sent straight to a queue, oldest
// first.
func (r *Recorder) Sends() []Send {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sends)
}

// Sent returns the messages the task sent straight to queue, on any
// destination, oldest first.
func (r *Recorder) Sent(queue string) []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []message.Message
	for _, s := range r.sends {
		if s.Queue == queue {
			out = append(out, s.Message)
		}
	}
	return out
}

// Recurs returns the task's scheduled recurring jobs: name → interval
// (after any intervals.<name> override of the config).
func (r *Recorder) Recurs() map[string]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Duration, len(r.recurs))
	for name, rc := range r.recurs {
		out[name] = rc.interval
	}
	return out
}

// Records returns the task's out-of-band records, oldest first: what it
// wrote with Log, Debug, Alert, Error and Out, what it logged through its
// Logger (below Info on "debug", Info and Warn on "log", Error and above
// on "error"; a string attribute "channel" picks another), and the error
// the host reports for a recurring job with an interval that is not
// positive.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.records)
}

// Texts returns the texts of the task's records on channel, oldest first.
func (r *Recorder) Texts(channel string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Channel == channel {
			out = append(out, rec.Text)
		}
	}
	return out
}

// Reset forgets the emitted and sent messages and the records, so that a
// test can look at what one step did. The task, its config, state and
// recurring jobs stay.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emitted, r.sends, r.records = nil, nil, nil
}

func (r *Recorder) out(channel, text string, details map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, Record{Channel: channel, Text: text, Details: details})
}

// rt is the task.Runtime of a Recorder. It is apart from the Recorder so
// that the Recorder's own methods (Message, Config, …) are the test's,
// not the task's.
type rt struct{ r *Recorder }

var _ task.Runtime = rt{}

func (x rt) Context() context.Context {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	return x.r.ctx
}

func (x rt) Config() map[string]any {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	return x.r.config
}

func (x rt) Emit(msg message.Message) error {
	m, err := deliverable(RouterQueue, "", msg)
	if err != nil {
		return err
	}
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	x.r.emitted = append(x.r.emitted, m)
	return nil
}

func (x rt) Send(qname, destination string, msg message.Message) error {
	m, err := deliverable(qname, destination, msg)
	if err != nil {
		return err
	}
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	x.r.sends = append(x.r.sends, Send{Queue: qname, Destination: destination, Message: m})
	return nil
}

// deliverable checks a send as the host's transport does and returns the
// copy of msg the receiver would get.
func deliverable(qname, destination string, msg message.Message) (message.Message, error) {
	if err := transit.ValidateQueueName(qname); err != nil {
		return nil, err
	}
	if destination != "" {
		if err := transit.ValidateHost(destination); err != nil {
			return nil, fmt.Errorf("send to %q: destination: %w", qname, err)
		}
	}
	m, err := message.Normalize(msg)
	if err != nil {
		return nil, fmt.Errorf("send to %q: %w", qname, err)
	}
	return m.Copy(), nil
}

func (x rt) Recur(name string, interval time.Duration, work func(*task.Context)) {
	if interval <= 0 {
		x.r.out(oob.ChannelError, fmt.Sprintf("task %s: recur %q: interval must be positive, got %v", x.r.name, name, interval), nil)
		return
	}
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	x.r.recurs[name] = &recur{interval: interval, work: work}
}

func (x rt) StopRecur(name string) {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	delete(x.r.recurs, name)
}

func (x rt) StopRecurs() {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	clear(x.r.recurs)
}

func (x rt) Out(channel, text string, details map[string]any) { x.r.out(channel, text, details) }

// Logger records the task's log output as out-of-band records, with the
// daemon's mapping of levels to channels and of attributes to details
// (oob.NewRecordHandler). Every level is enabled, as with the daemon's
// highest -d.
func (x rt) Logger() *slog.Logger {
	return slog.New(oob.NewRecordHandler(func(_ context.Context, rec oob.Record, _ slog.Level) {
		x.r.out(rec.Channel, rec.Text, rec.Details)
	}, nil))
}

// Process is "main": the task runs in the daemon.
func (x rt) Process() string { return "main" }

// safeCall runs task code, turning a panic into an error with the stack.
func safeCall(what string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s panicked: %v\n%s", what, p, debug.Stack())
		}
	}()
	return f()
}

// configKey is the content of a config, to tell a change from a resend.
func configKey(cfg map[string]any) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Sprintf("unencodable:%p", cfg)
	}
	return string(b)
}

// roundTrip encodes state as JSON and decodes it again.
func roundTrip(state map[string]any) (map[string]any, error) {
	b, err := message.Marshal(message.Message(state))
	if err != nil {
		return nil, err
	}
	m, err := message.Unmarshal(b)
	if err != nil {
		return nil, err
	}
	return m, nil
}
