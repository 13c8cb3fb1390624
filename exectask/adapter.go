package exectask

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/supervise"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/transit"
)

// Defaults for Options.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMessageTimeout   = 60 * time.Second
	DefaultStopGrace        = 2 * time.Second
	// DefaultWindow is how many message requests may be in flight to a
	// co-process that speaks protocol 2 (the host sends the next ones
	// before the first is acked; docs/exec-protocol.md).
	DefaultWindow = 64
)

// DefaultMaxCrashRedeliveries is how many times a message whose
// co-process died while it alone was in flight is given to a restarted
// co-process, when the task's config has no max_crash_redeliveries (the
// framework key the host checks, host.MaxCrashRedeliveries, with the same
// default).
const DefaultMaxCrashRedeliveries = 1

// MaxAttempts is how many co-processes a message is tried on with the
// default max_crash_redeliveries: when the co-process dies (or breaks the
// protocol, or times out) while handling it alone, the message is given to
// the restarted co-process, up to 1 + max_crash_redeliveries times in all;
// then it is moved to the dead-letter queue (with the crash's exit status
// in its dead_letter record), reported as failed (with its text, on the
// error channel), and the task goes on with the next message.
const MaxAttempts = 1 + DefaultMaxCrashRedeliveries

// spareAttempts bounds the attempts at a message whose failures were not
// crashes with it alone in flight (a restart that failed; a crash while
// later messages were in flight, after which it goes alone).
const spareAttempts = 2

// Spec says how to run one exec task.
type Spec struct {
	Name string // the task's name (and queue)
	Path string // the executable
	// Process is given to the co-process as MULTIMODULE_PROCESS ("main"
	// or the task whose external process hosts it).
	Process string
	// Logger receives the co-process' stderr (one record per line, on the
	// log channel); nil means slog.Default().
	Logger *slog.Logger
	// HandshakeTimeout bounds the wait for the task's hello.
	HandshakeTimeout time.Duration
	// MessageTimeout bounds the wait for the ack of one request; a
	// co-process that takes longer is killed and restarted.
	MessageTimeout time.Duration
	// StopGrace is how long a co-process may take to exit once its stdin
	// is closed before it is killed.
	StopGrace time.Duration
	// Window bounds the message requests in flight to a co-process that
	// speaks protocol 2 (0: DefaultWindow; 1: one at a time, as protocol
	// 1). Their lines together are also kept within what the stdin pipe
	// holds, so a write to the co-process never waits for it.
	Window int
}

func (s *Spec) defaults() {
	if s.HandshakeTimeout <= 0 {
		s.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if s.MessageTimeout <= 0 {
		s.MessageTimeout = DefaultMessageTimeout
	}
	if s.StopGrace <= 0 {
		s.StopGrace = DefaultStopGrace
	}
	if s.Process == "" {
		s.Process = "main"
	}
	if s.Window <= 0 {
		s.Window = DefaultWindow
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
}

// Task is the adapter: a task.Task whose code runs in a co-process spoken
// to over the line protocol (docs/exec-protocol.md). It is an ordinary
// task to the host, so it runs internal or external and migrates like any
// other. Its methods run on the task's goroutine, one at a time.
type Task struct {
	spec     Spec
	stateful bool // as the definition says (the host plans with it)

	proc        *coproc
	hello       Record
	version     int64
	initialised bool // state and config sent to proc
	nextID      int64
	buf         []byte

	config     map[string]any
	haveConfig bool
	synced     map[string]any // the state the co-process has (a copy)

	backoff   supervise.Backoff
	notBefore time.Time
	crashes   int
	cleanup   runtime.Cleanup
	restarts  *atomic.Uint64 // the host's count of co-process restarts (nil: none)

	onHello func(Record) // tells the source what a (re)started co-process declared

	// The pipeline (protocol 2): messages the host announced (Ahead) or is
	// handling, oldest first, from ahead[head]. The first ones may be
	// written to the co-process (id != 0) or already answered at a
	// barrier (done); the rest wait to be written.
	ahead       []pending
	head        int
	inFlight    int // written and not yet acked
	inBytes     int // their request lines' bytes
	solo        int // after a crash: this many messages go one at a time
	maxInFlight int // the most ever in flight (for tests)

	// Poison messages: a message that keeps killing the co-process is
	// dead-lettered; the restarts it caused are not counted (restarts)
	// when the co-process had answered a message since the crash before
	// (else it is crash-looping, and they count).
	answered     uint64 // messages the co-process answered
	answeredAt   uint64 // answered, at the latest crash
	lastExit     string // the exit status of the latest crash
	holdRestarts bool   // restarts now retry a message: held until its fate is known
	heldRestarts uint64
	forgiveNext  bool // the next restart follows the last crash on a dead-lettered message
}

// pending is a message the host handed over (Ahead or Message) and whose
// Message call has not returned yet.
type pending struct {
	msg  message.Message
	id   int64 // its request's id once written (0: not written)
	size int   // bytes of its request line
	done bool  // answered (at a barrier) before its Message call: err is the result
	err  error
}

var (
	_ task.Task       = (*Task)(nil)
	_ task.Configurer = (*Task)(nil)
	_ task.Closer     = (*Task)(nil)
	// The host's abilities (host/abilities.go): pipelining, the
	// co-process' pid and restarts.
	_ host.AheadTaker     = (*Task)(nil)
	_ host.PIDReporter    = (*Task)(nil)
	_ host.RestartCounter = (*Task)(nil)
)

// Start starts the co-process of spec and completes the handshake. The
// state and config follow at the first SetConfig. A co-process that cannot
// start, exits, writes garbage or stays silent fails Start with an error
// that says which.
func Start(spec Spec) (*Task, error) {
	spec.defaults()
	t := &Task{spec: spec}
	t.backoff = supervise.CoprocessRestart
	if err := t.spawn(false); err != nil {
		return nil, fmt.Errorf("exec task %s (%s): %w", spec.Name, spec.Path, err)
	}
	t.stateful = t.hello.Stateful
	return t, nil
}

// CountRestartsIn makes every restart of the co-process (a start after
// the first, whether or not its handshake succeeds) add one to c. The
// host calls it when it loads the task, with the counter of
// local.admin.start.coprocess, so that the monitor sees a crash loop that
// the adapter's own restarts would otherwise hide, and failsafes it as it
// does a crash-looping external.
func (t *Task) CountRestartsIn(c *atomic.Uint64) { t.restarts = c }

// HandshakeStateful reports whether the co-process declared itself
// stateful in its handshake when the task was built. It is a fact of the
// exec protocol, not a declaration to the host: the host goes by
// task.Definition.Stateful, which Dir takes from the same handshake.
func (t *Task) HandshakeStateful() bool { return t.stateful }

// PID is the process id of the running co-process, or 0.
func (t *Task) PID() int {
	if t.proc == nil {
		return 0
	}
	return t.proc.pid
}

// Protocol is the protocol version negotiated with the co-process.
func (t *Task) Protocol() int64 { return t.version }

// spawn starts a co-process and shakes hands. restart says it replaces
// one that died: it is counted.
func (t *Task) spawn(restart bool) error {
	p, err := startProc(procSpec{
		name: t.spec.Name, path: t.spec.Path, dir: dirOf(t.spec.Path),
		process: t.spec.Process, mode: ModeRun, log: t.spec.Logger,
	})
	if err != nil {
		return err
	}
	if restart && t.restarts != nil {
		switch {
		case t.holdRestarts:
			t.heldRestarts++
		case t.forgiveNext:
			t.forgiveNext = false
		default:
			t.restarts.Add(1)
		}
	}
	hello, v, err := p.handshake(t.spec.HandshakeTimeout, t.spec.Name, t.spec.Process, t.spec.Window, false)
	if err != nil {
		p.kill()
		if tail := p.tail(); tail != "" {
			err = fmt.Errorf("%w; its last stderr lines:\n%s", err, tail)
		}
		return fmt.Errorf("handshake with pid %d: %w", p.pid, err)
	}
	if hello.Name != "" && hello.Name != t.spec.Name {
		t.spec.Logger.Warn(fmt.Sprintf("exec task %s: the co-process calls itself %q; the file name %q wins", t.spec.Name, hello.Name, t.spec.Name))
	}
	if t.version != 0 && hello.Stateful != t.stateful {
		t.spec.Logger.Warn(fmt.Sprintf("exec task %s: the restarted co-process declares stateful=%v, the running task was loaded with stateful=%v; reload the task to change it", t.spec.Name, hello.Stateful, t.stateful))
	}
	if t.onHello != nil {
		t.onHello(hello)
	}
	t.cleanup.Stop()
	t.proc, t.hello, t.version, t.initialised = p, hello, v, false
	t.inFlight, t.inBytes = 0, 0
	// A task dropped without Close (a load that failed after it was
	// built) must not leave its co-process behind.
	t.cleanup = runtime.AddCleanup(t, func(p *coproc) { go p.kill() }, p)
	return nil
}

// ensure makes sure a co-process runs and has the state and config,
// restarting it (after the back-off) if it died.
func (t *Task) ensure(tc *task.Context) error { return t.ensureConfig(tc, false) }

// ensureConfig is ensure; with first (SetConfig giving a config the
// co-process has not had), a config the co-process refuses is returned
// (a *rejected) instead of reported.
func (t *Task) ensureConfig(tc *task.Context, first bool) error {
	if t.proc != nil && t.proc.dead() {
		t.crashed(tc, t.proc.exitError("while idle"))
	}
	if t.proc == nil {
		if wait := time.Until(t.notBefore); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-tc.Context().Done():
				timer.Stop()
				return tc.Context().Err()
			}
		}
		if err := t.spawn(true); err != nil {
			err = fmt.Errorf("restart: %w", err)
			t.failed(tc, 0, err)
			return err
		}
		tc.Log(fmt.Sprintf("exec task %s: co-process restarted (pid %d)", t.spec.Name, t.proc.pid), "pid", t.proc.pid)
	}
	if t.initialised {
		return nil
	}
	if t.hello.Stateful {
		if err := t.request(tc, TypeState, "state", tc.State()); err != nil {
			t.crashed(tc, err)
			return err
		}
		t.synced = message.Message(tc.State()).Copy()
	}
	if t.haveConfig {
		if err := t.request(tc, TypeConfig, "config", t.config); err != nil {
			var rej *rejected
			if !errors.As(err, &rej) {
				t.crashed(tc, err)
				return err
			}
			t.initialised = true
			if first {
				return err
			}
			tc.Error(fmt.Sprintf("exec task %s: the restarted co-process rejected its config: %v", t.spec.Name, err))
		}
	}
	t.initialised = true
	return nil
}

// crashed reports a co-process that died or broke the protocol, stops it
// and schedules its restart.
func (t *Task) crashed(tc *task.Context, err error) {
	p := t.proc
	if p == nil {
		return
	}
	t.proc = nil
	t.cleanup.Stop()
	p.kill()
	t.unsend()
	ranFor := time.Since(p.started)
	t.lastExit, t.answeredAt = p.exitStatus(), t.answered
	detail := []any{"pid", p.pid}
	if tail := p.tail(); tail != "" {
		detail = append(detail, "stderr", tail)
	}
	t.failed(tc, ranFor, fmt.Errorf("co-process (pid %d, %s) failed: %w", p.pid, p.exitText(), err), detail...)
}

// failed counts a crash or failed start and sets the back-off.
func (t *Task) failed(tc *task.Context, ranFor time.Duration, err error, detail ...any) {
	t.crashes++
	d := t.backoff.Next(ranFor)
	t.notBefore = time.Now().Add(d)
	detail = append(detail, "crashes", t.crashes)
	tc.Error(fmt.Sprintf("exec task %s: %v; restarting in %v", t.spec.Name, err, d.Round(time.Millisecond)), detail...)
}

// rejected is an ack carrying an error: the task refused the request (a
// handler failure, not a crash).
type rejected struct{ text string }

func (r *rejected) Error() string { return "the task answered: " + r.text }

// request sends one request other than a message (state, config, tick)
// and handles what the task writes until its ack. It is a barrier: the
// messages in flight are answered first, and nothing else is in flight
// while it is. A nil value sends no payload key.
func (t *Task) request(tc *task.Context, typ, key string, value map[string]any) error {
	if err := t.settle(tc); err != nil {
		return err
	}
	t.nextID++
	id := t.nextID
	var err error
	if typ == TypeTick {
		t.buf = appendTick(t.buf[:0], id, key)
	} else if t.buf, err = appendRequest(t.buf[:0], typ, id, key, value); err != nil {
		return fmt.Errorf("%s %d: %w", typ, id, err)
	}
	if err := t.proc.write(t.buf); err != nil {
		return err
	}
	return t.await(tc, typ, id)
}

// await handles what the task writes until the ack of request id (the
// oldest in flight: a task answers in request order).
func (t *Task) await(tc *task.Context, typ string, id int64) error {
	when := func() string { return fmt.Sprintf("while handling %s %d", typ, id) }
	for {
		rec, err := t.proc.next(tc.Context(), t.spec.MessageTimeout, when)
		if err != nil {
			return err
		}
		if rec.Type == TypeAck {
			if rec.ID != id {
				return fmt.Errorf("malformed line from the co-process %s: an ack for id %d, expected %d", when(), rec.ID, id)
			}
			if rec.Fail {
				return &rejected{text: rec.Error}
			}
			return nil
		}
		if err := t.apply(tc, rec); err != nil {
			return fmt.Errorf("%s: %w", when(), err)
		}
	}
}

// Ahead tells the task which messages its Message is called with next,
// in this order, before any other of its methods (the host's promise).
// With protocol 2 they are written to the co-process before the first is
// acked (up to the window), so a burst costs a few pipe wake-ups, not two
// per message; each is still answered within its own Message call, which
// carries out its records (emits are the handling of that message).
func (t *Task) Ahead(tc *task.Context, msgs []message.Message) {
	if t.head == len(t.ahead) {
		t.ahead, t.head = t.ahead[:0], 0
	}
	for _, m := range msgs {
		t.ahead = append(t.ahead, pending{msg: m})
	}
}

// window is how many message requests may be in flight now.
func (t *Task) window() int {
	if t.version < 2 || t.solo > 0 {
		return 1
	}
	return t.spec.Window
}

// fill writes the next messages not yet written, in one write, while the
// window and the pipe allow. It tops up only once the window is half
// empty, so that a steady stream is written in bursts. A message that
// cannot be written as JSON is answered at once (it never reaches the
// task).
func (t *Task) fill() error {
	w := t.window()
	if t.inFlight > 0 && t.inFlight > w/2 {
		return nil
	}
	budget := t.proc.pipeBudget()
	buf := t.buf[:0]
	for i := t.head; i < len(t.ahead) && t.inFlight < w; i++ {
		e := &t.ahead[i]
		if e.id != 0 || e.done {
			continue
		}
		mark := len(buf)
		var err error
		if buf, err = appendRequest(buf, TypeMessage, t.nextID+1, "message", e.msg); err != nil {
			buf = buf[:mark]
			e.done, e.err = true, err
			continue
		}
		size := len(buf) - mark
		if t.inFlight > 0 && t.inBytes+size > budget {
			buf = buf[:mark]
			break
		}
		t.nextID++
		e.id, e.size = t.nextID, size
		t.inFlight++
		t.inBytes += size
	}
	t.buf = buf
	t.maxInFlight = max(t.maxInFlight, t.inFlight)
	if len(buf) == 0 {
		return nil
	}
	return t.proc.write(buf)
}

// answer waits for the ack of e, the oldest message in flight.
func (t *Task) answer(tc *task.Context, e *pending) error {
	err := t.await(tc, TypeMessage, e.id)
	var rej *rejected
	if err == nil || errors.As(err, &rej) {
		t.inFlight--
		t.inBytes -= e.size
	}
	return err
}

// settle answers every message in flight (a barrier before any other
// request): their records are carried out now, and their Message calls
// return the result. A crash is returned (the caller reports it); the
// messages go back to unwritten.
func (t *Task) settle(tc *task.Context) error {
	for i := t.head; t.inFlight > 0 && i < len(t.ahead); i++ {
		e := &t.ahead[i]
		if e.id == 0 || e.done {
			continue
		}
		err := t.answer(tc, e)
		var rej *rejected
		if err != nil && !errors.As(err, &rej) {
			return err
		}
		e.done, e.err = true, err
	}
	return nil
}

// unsend forgets what was written to a co-process that is gone: the
// messages not answered go to the next one, one at a time until they are
// done (so that one that kills the co-process is found and blamed, not
// the others in its window).
func (t *Task) unsend() {
	n := 0
	for i := t.head; i < len(t.ahead); i++ {
		if e := &t.ahead[i]; e.id != 0 && !e.done {
			e.id, e.size = 0, 0
			n++
		}
	}
	if n > 1 {
		t.solo = max(t.solo, n)
	}
	t.inFlight, t.inBytes = 0, 0
}

// apply carries out one record the task wrote.
func (t *Task) apply(tc *task.Context, rec Record) error {
	switch rec.Type {
	case TypeEmit:
		if err := tc.Emit(rec.Message); err != nil {
			tc.Error(err.Error())
		}
	case TypeSend:
		if err := tc.SendTo(rec.Queue, rec.Destination, rec.Message); err != nil {
			tc.Error(err.Error())
		}
	case TypeState:
		tc.SetState(rec.State)
		t.synced = message.Message(rec.State).Copy()
	case TypeOut:
		kv := make([]any, 0, 2*len(rec.Details))
		for k, v := range rec.Details {
			kv = append(kv, k, v)
		}
		tc.Out(rec.Channel, rec.Text, kv...)
	case TypeRecur:
		name := rec.Name
		tc.NamedRecur(name, time.Duration(rec.Interval*float64(time.Second)), func(tc *task.Context) { t.tick(tc, name) })
	case TypeDelRecurs:
		tc.StopRecurs()
	default:
		return fmt.Errorf("malformed line from the co-process: a %q record is not allowed here", rec.Type)
	}
	return nil
}

// sync sends the host's state first when it changed behind the task's
// back (an operator's state transform).
func (t *Task) sync(tc *task.Context) error {
	if !t.hello.Stateful || equalValue(map[string]any(tc.State()), t.synced) {
		return nil
	}
	if err := t.request(tc, TypeState, "state", tc.State()); err != nil {
		return err
	}
	t.synced = message.Message(tc.State()).Copy()
	return nil
}

// SetConfig gives the co-process its config. A config the task refuses
// (an ack with an error) is rejected and the previous one stays. A
// co-process that cannot be started does not reject the config: it is
// kept and given to the co-process when a restart succeeds.
func (t *Task) SetConfig(tc *task.Context, config map[string]any) error {
	prev, had := t.config, t.haveConfig
	t.config, t.haveConfig = config, true
	if t.proc == nil || !t.initialised || t.proc.dead() {
		// Sends the config; other failures are reported there, and the
		// config is kept for the co-process a restart brings.
		err := t.ensureConfig(tc, true)
		var rej *rejected
		if errors.As(err, &rej) {
			t.config, t.haveConfig = prev, had
			return err
		}
		return nil
	}
	err := t.sync(tc)
	if err == nil {
		err = t.request(tc, TypeConfig, "config", config)
	}
	var rej *rejected
	switch {
	case err == nil:
		return nil
	case errors.As(err, &rej):
		t.config, t.haveConfig = prev, had
		return err
	default:
		t.config, t.haveConfig = prev, had
		t.crashed(tc, err)
		return fmt.Errorf("the co-process failed while applying the config: %w", err)
	}
}

// Message hands msg to the co-process and waits for its ack. If the
// co-process dies while handling it alone, the message is tried again on a
// restarted one, up to 1 + max_crash_redeliveries times in all; then it
// goes to the dead-letter queue (see poison). With protocol 2 the messages
// announced with Ahead are written ahead of their Message calls (see
// fill).
func (t *Task) Message(tc *task.Context, msg message.Message) error {
	e := t.take(tc, msg)
	defer t.pop()
	if e.done {
		t.answered++
		return e.err
	}
	limit := maxCrashRedeliveries(t.config)
	progress := false // answers since the crash before this message's first
	defer func() { t.holdRestarts = false }()
	crashes := 0
	var last error
	for try := 1; ; try++ {
		t.holdRestarts = try > 1
		err := t.handleHead(tc, e)
		var rej *rejected
		switch {
		case err == nil:
			t.answered++
			t.releaseHeld()
			return nil
		case errors.As(err, &rej):
			t.answered++
			t.releaseHeld()
			return err
		case errors.Is(err, errNoMarshal):
			t.releaseHeld()
			return err
		}
		last = err
		if t.proc != nil {
			alone := e.id != 0 && t.inFlight == 1
			if alone && crashes == 0 {
				progress = t.answered > t.answeredAt
			}
			t.crashed(tc, err)
			if alone {
				crashes++
			}
		}
		switch {
		case tc.Context().Err() != nil:
		case crashes > limit:
			return t.poison(tc, msg, crashes, limit, progress, last)
		case try < limit+1+spareAttempts:
			continue
		}
		t.releaseHeld()
		return fmt.Errorf("exec task %s: message not handled after %d attempts: %w", t.spec.Name, try, last)
	}
}

// releaseHeld counts the restarts held while a message was retried: it
// was not dead-lettered.
func (t *Task) releaseHeld() {
	if t.heldRestarts > 0 && t.restarts != nil {
		t.restarts.Add(t.heldRestarts)
	}
	t.heldRestarts = 0
}

// poison moves msg, which killed the co-process crashes times while it
// alone was in flight, to the dead-letter queue with the reason and the
// last crash's exit status. When the co-process had answered a message
// since the crash before the first of these, the restarts it caused are
// not counted (they would failsafe a task that is otherwise healthy);
// else the task is crash-looping and they count.
func (t *Task) poison(tc *task.Context, msg message.Message, crashes, limit int, progress bool, last error) error {
	if progress {
		t.heldRestarts, t.forgiveNext = 0, true
	} else {
		t.releaseHeld()
	}
	reason := fmt.Sprintf("the co-process of exec task %s died %d times while handling it, the last time %s (max_crash_redeliveries %d)",
		t.spec.Name, crashes, t.lastExit, limit)
	dl := msg.Copy()
	dl.EnsureMeta()["dead_letter"] = map[string]any{
		"reason":                 reason,
		"queue":                  t.spec.Name,
		"task":                   t.spec.Name,
		"crashes":                int64(crashes),
		"exit_status":            t.lastExit,
		"max_crash_redeliveries": int64(limit),
		"error":                  last.Error(),
		"time":                   float64(time.Now().UnixNano()) / 1e9,
	}
	if err := tc.Send(transit.DeadLetterQueue, dl); err != nil {
		return fmt.Errorf("exec task %s: message not handled after %d attempts, and it could not be moved to the dead-letter queue (%v): %w", t.spec.Name, crashes, err, last)
	}
	return fmt.Errorf("exec task %s: message not handled after %d attempts (the co-process died each time, the last time %s), moved to the dead-letter queue: %w", t.spec.Name, crashes, t.lastExit, last)
}

// maxCrashRedeliveries reads the framework key max_crash_redeliveries of
// a task's config as host.MaxCrashRedeliveries does (the host refuses a
// config whose value is not a whole number ≥ 0).
func maxCrashRedeliveries(cfg map[string]any) int {
	if f, ok := message.Float(cfg["max_crash_redeliveries"]); ok && f >= 0 && f <= 1e6 {
		return int(f)
	}
	return DefaultMaxCrashRedeliveries
}

// take finds msg at the head of the announced messages, or (not
// announced) queues it there. A message other than the one announced
// next breaks the host's promise: what is in flight is answered, the
// announcement is dropped (with a warning), and msg goes alone.
func (t *Task) take(tc *task.Context, msg message.Message) *pending {
	if t.head < len(t.ahead) {
		if e := &t.ahead[t.head]; sameMessage(e.msg, msg) {
			return e
		}
		if err := t.settle(tc); err != nil {
			t.crashed(tc, err)
		}
		t.spec.Logger.Warn(fmt.Sprintf("exec task %s: a message other than the one announced was handed over; %d announced messages dropped", t.spec.Name, len(t.ahead)-t.head))
		for _, e := range t.ahead[t.head:] {
			if e.done && e.err != nil {
				tc.Error(fmt.Sprintf("exec task %s: message handler failed: %v", t.spec.Name, e.err))
			}
		}
		t.inFlight, t.inBytes = 0, 0
	}
	clear(t.ahead)
	t.ahead, t.head = append(t.ahead[:0], pending{msg: msg}), 0
	return &t.ahead[0]
}

// pop drops the head, whose Message call returns.
func (t *Task) pop() {
	t.ahead[t.head] = pending{}
	t.head++
	if t.head == len(t.ahead) {
		t.ahead, t.head = t.ahead[:0], 0
	}
	if t.solo > 0 {
		t.solo--
	}
}

// handleHead is one attempt at the head message e: the co-process is
// (re)started if need be, e is written (with what follows it, as far as
// the window allows) unless it already was, and answered.
func (t *Task) handleHead(tc *task.Context, e *pending) error {
	if e.id == 0 {
		if err := t.ensure(tc); err != nil {
			return err
		}
		// Nothing is in flight when the head is not: the state can go
		// first if it changed behind the task's back.
		if err := t.sync(tc); err != nil {
			return err
		}
	}
	if err := t.fill(); err != nil {
		return err
	}
	if e.done { // not JSON-compatible: never written
		return e.err
	}
	return t.answer(tc, e)
}

// sameMessage reports whether a and b are the same map (not equal ones).
func sameMessage(a, b message.Message) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// tick runs a recurring request the task asked for. A dead co-process is
// restarted unless its back-off is still running (the next tick will).
func (t *Task) tick(tc *task.Context, name string) {
	if t.proc == nil && time.Now().Before(t.notBefore) {
		return
	}
	if err := t.ensure(tc); err != nil {
		return
	}
	err := t.sync(tc)
	if err == nil {
		err = t.request(tc, TypeTick, name, nil)
	}
	var rej *rejected
	switch {
	case err == nil:
	case errors.As(err, &rej):
		tc.Error(fmt.Sprintf("exec task %s: tick %q failed: %v", t.spec.Name, name, err))
	default:
		t.crashed(tc, err)
	}
}

// Close stops the co-process: its stdin is closed, and after the grace
// period it is killed.
func (t *Task) Close(tc *task.Context) error {
	if t.proc == nil {
		return nil
	}
	// The host finishes every message it announced before it closes a
	// task; should one still be in flight, it is answered first.
	if err := t.settle(tc); err != nil {
		tc.Error(fmt.Sprintf("exec task %s: while closing, the co-process failed with messages in flight: %v", t.spec.Name, err))
	}
	t.cleanup.Stop()
	t.proc.stop(t.spec.StopGrace)
	t.proc = nil
	return nil
}

// equalValue compares canonical message values (nil, bool, string,
// int64, float64, json.Number, []any, map[string]any) without reflection.
func equalValue(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equalValue(v, w) {
				return false
			}
		}
		return true
	case message.Message:
		return equalValue(map[string]any(x), b)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalValue(x[i], y[i]) {
				return false
			}
		}
		return true
	default:
		if m, ok := b.(message.Message); ok {
			return equalValue(a, map[string]any(m))
		}
		return a == b
	}
}
