package oob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
)

// DefaultTimeout bounds how long Handle waits for a busy sink or for a
// queue or router send (Options.Timeout).
const DefaultTimeout = 5 * time.Second

// DefaultRotateCheck is how often, at most, a file sink checks whether its
// path still names the open file (Options.RotateCheck): records written
// within this time after a rotation still land in the rotated file.
const DefaultRotateCheck = time.Second

// Options configures a Dispatcher. The zero value is usable: default
// handling, the process's stdout and stderr, no debug output.
type Options struct {
	// Handling says where each channel goes; nil means DefaultHandling.
	// A channel without an entry (or with an empty one) goes where "error"
	// goes, and "error" without an entry goes to stderr. Use
	// ParseHandling or Handling.Validate to check it first: New does not
	// fail, and a bad queue name shows up as a send failure. Relative
	// file paths are resolved against the working directory at New.
	Handling Handling

	// Stdout and Stderr are the writers behind handlings "1" and "2";
	// nil means os.Stdout and os.Stderr. Stderr is also the last resort
	// when the error channel itself fails.
	Stdout, Stderr io.Writer

	// Emit routes a message like a task's emit; used by handling "router".
	Emit func(ctx context.Context, m message.Message) error

	// SendQueue sends a message to a queue; used by every handling that is
	// a queue name. Both functions receive a context that carries a
	// deadline (Timeout) and must honour it; the message is theirs.
	SendQueue func(ctx context.Context, qname string, m message.Message) error

	// DebugLevel is the -d option. 0 drops debug records at the source,
	// before any work; n > 0 produces debug output of verbosity 1..n.
	// SetDebugLevel changes it live.
	DebugLevel int

	// Terminal reports whether a writer is a terminal: human lines are
	// written to terminals, JSON lines to everything else. nil means: a
	// character device. Asked once per writer, in New.
	Terminal func(w io.Writer) bool

	// Journal reports whether a writer is the systemd journal's stream:
	// journal lines (a syslog priority prefix, no time) are written there,
	// whatever Terminal says. nil means IsJournal (JOURNAL_STREAM). Asked
	// once per writer, in New.
	Journal func(w io.Writer) bool

	// Timeout bounds how long one Handle waits for a sink that is busy
	// (a write that does not return) and how long a queue or router send
	// may take. 0 means DefaultTimeout.
	Timeout time.Duration

	// RotateCheck is how often, at most, a file sink compares the open
	// file with the file its path names (device and inode, one stat), so
	// that a file rotated away, renamed or deleted is re-created at the
	// path. 0 means DefaultRotateCheck; a negative value checks before
	// every write (exact, but the stat nearly doubles the cost of a
	// record: docs/benchmarks.md).
	RotateCheck time.Duration
}

// Dispatcher delivers out-of-band records to the sinks their channels are
// handled by, after the channel's filters. It is safe for concurrent use;
// writes to one sink are serialized, so lines never interleave.
type Dispatcher struct {
	sinks    map[string]sink // channel → sink, fixed by New
	errSink  sink            // where "error" and channels without handling go
	all      []sink          // each distinct sink once, for Close
	stderr   *writerSink     // the last resort
	timeout  time.Duration
	pid      int
	debug    atomic.Int64
	filters  atomic.Pointer[filterSet]
	closed   atomic.Bool
	closeErr error
	once     sync.Once
}

// New returns a Dispatcher for opts. Files are opened on first use, so a
// channel that never writes never creates its file.
func New(opts Options) *Dispatcher {
	d := &Dispatcher{
		sinks:   map[string]sink{},
		timeout: opts.Timeout,
		pid:     os.Getpid(),
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	d.SetDebugLevel(opts.DebugLevel)
	stdout, stderr := opts.Stdout, opts.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	terminal := opts.Terminal
	if terminal == nil {
		terminal = isTerminal
	}
	journal := opts.Journal
	if journal == nil {
		journal = IsJournal
	}
	rotate := opts.RotateCheck
	switch {
	case rotate == 0:
		rotate = DefaultRotateCheck
	case rotate < 0:
		rotate = -1 // before every write
	}
	errGate := newGate()
	outGate := errGate
	if !sameWriter(stdout, stderr) {
		outGate = newGate()
	}
	d.stderr = &writerSink{name: "stderr", w: stderr, human: terminal(stderr), journal: journal(stderr), gate: errGate}
	byKey := map[string]sink{}
	sinkFor := func(how string) sink {
		kind := classify(how)
		key := how
		if kind == kindFile {
			if abs, err := filepath.Abs(how); err == nil {
				key = abs
			} else {
				key = filepath.Clean(how)
			}
		}
		if s, ok := byKey[key]; ok {
			return s
		}
		var s sink
		switch kind {
		case kindStdout:
			s = &writerSink{name: "stdout", w: stdout, human: terminal(stdout), journal: journal(stdout), gate: outGate}
		case kindStderr:
			s = d.stderr
		case kindFile:
			s = &fileSink{path: key, checkEvery: rotate, gate: newGate()}
		case kindRouter:
			s = &funcSink{emit: opts.Emit, timeout: d.timeout, gate: newGate()}
		default:
			s = &funcSink{qname: how, send: opts.SendQueue, timeout: d.timeout, gate: newGate()}
		}
		byKey[key] = s
		d.all = append(d.all, s)
		return s
	}
	h := opts.Handling
	if h == nil {
		h = DefaultHandling()
	}
	if how := h[ChannelError]; how != "" {
		d.errSink = sinkFor(how)
	} else {
		d.errSink = sinkFor(HandlingStderr)
	}
	for ch, how := range h {
		if how != "" {
			d.sinks[ch] = sinkFor(how)
		}
	}
	return d
}

// sinkFor returns the sink of channel ch: its own, or the error channel's.
func (d *Dispatcher) sinkFor(ch string) sink {
	if s, ok := d.sinks[ch]; ok {
		return s
	}
	return d.errSink
}

// SetDebugLevel changes the debug level (-d) live; negative means 0.
func (d *Dispatcher) SetDebugLevel(level int) {
	d.debug.Store(int64(max(level, 0)))
}

// DebugEnabled reports whether debug output of verbosity level (1 = the
// least, as -d 1) is produced; level 0 or below counts as 1. It is one
// atomic load, for callers that would otherwise build a record for
// nothing.
func (d *Dispatcher) DebugEnabled(level int) bool {
	return d.debug.Load() >= int64(max(level, 1))
}

// SetFilters replaces the per-channel filters with cfg, the OutOfBand
// task's config:
//
//	{<channel>: {include_matches: {<name>: <pattern>}, exclude_matches: {<name>: <pattern>}}}
//
// A record passes its channel's filter when include_matches is absent or
// empty or one of its patterns matches the record's Message(), and none of
// exclude_matches matches. Keys starting with "." and the framework keys
// is_external and intervals are ignored. The new filters apply atomically
// to every record handled after SetFilters returns. A bad config (not a
// map, an unknown key, a pattern that does not compile) is rejected whole
// with an error naming the channel and the pattern's name, and the filters
// in force stay. A nil or empty cfg removes every filter.
func (d *Dispatcher) SetFilters(cfg map[string]any) error {
	fs, err := compileFilters(cfg)
	if err != nil {
		return err
	}
	if len(fs) == 0 {
		d.filters.Store(nil)
		return nil
	}
	d.filters.Store(&fs)
	return nil
}

// passes applies the channel's filter, if it has one.
func (d *Dispatcher) passes(dv *delivery) bool {
	fs := d.filters.Load()
	if fs == nil {
		return true
	}
	f := (*fs)[dv.r.Channel]
	if f == nil {
		return true
	}
	return f.passes(dv.message())
}

// Handle delivers r to its channel's sink, after the channel's filters.
// A zero Time becomes now, a zero PID this process's pid, an empty Channel
// "log". Debug records are dropped at once while the debug level is 0.
//
// Handle never panics, and its waits are bounded: each sink it tries (the
// record's, then the error channel's for a failure report, then stderr as
// last resort) waits at most Options.Timeout for its lock and, for queues
// and the router, Options.Timeout for the send. A sink
// that fails is reported once on the "error" channel, and again only
// after it has worked in between; when it works again a note on "log"
// says how many records were lost. When the error channel's own sink
// fails, the report goes to Options.Stderr. Records raised synchronously
// inside an Emit or SendQueue call (ctx is the one Handle passed) that
// would go to a queue or the router again are written to Options.Stderr
// instead, so a failing send cannot loop. After Close, Handle does
// nothing.
func (d *Dispatcher) Handle(ctx context.Context, r Record) {
	if r.Channel == ChannelDebug && d.debug.Load() <= 0 {
		return
	}
	if d.closed.Load() {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	defer func() {
		if p := recover(); p != nil {
			d.lastResort(Record{Channel: ChannelError, Text: fmt.Sprintf("oob: panic while handling a %q record: %v", r.Channel, p)})
		}
	}()
	if r.Channel == "" {
		r.Channel = ChannelLog
	}
	stamp(&r, d.pid)
	dv := &delivery{r: r}
	if !d.passes(dv) {
		return
	}
	s := d.sinkFor(r.Channel)
	if _, isFunc := s.(*funcSink); isFunc && delivering(ctx) {
		d.lastResort(r)
		return
	}
	d.deliver(ctx, s, dv)
}

// deliver sends dv to s and keeps the failure bookkeeping of s.
func (d *Dispatcher) deliver(ctx context.Context, s sink, dv *delivery) {
	st := s.state()
	wait := d.timeout
	if st.busy.Load() {
		wait = 0 // known stuck: do not make every caller wait again
	}
	err := s.deliver(ctx, dv, wait)
	if err == nil {
		if st.failing.Load() && st.failing.CompareAndSwap(true, false) {
			st.busy.Store(false)
			d.reportRecovery(ctx, s, dv.r.Channel, st.lost.Swap(0))
		}
		return
	}
	if errors.Is(err, errClosed) {
		return
	}
	st.lost.Add(1)
	if st.failing.CompareAndSwap(false, true) {
		st.busy.Store(errors.Is(err, errBusy))
		st.lost.Store(1)
		d.reportFailure(ctx, s, dv.r.Channel, err)
	}
}

// reportFailure puts one record about a failing sink on the error channel,
// or on stderr when that is the failing one. It never recurses.
func (d *Dispatcher) reportFailure(ctx context.Context, failed sink, ch string, err error) {
	rec := Record{
		Channel: ChannelError,
		Text: fmt.Sprintf("oob: cannot deliver %q records to %s: %v (records to it are dropped; reported once until it works again)",
			ch, failed, err),
		Details: map[string]any{"sink": failed.String(), "channel": ch, "error": err.Error()},
	}
	stamp(&rec, d.pid)
	dv := &delivery{r: rec}
	if !d.passes(dv) {
		return
	}
	es := d.errSink
	_, isFunc := es.(*funcSink)
	if es == failed || (isFunc && delivering(ctx)) {
		d.lastResort(rec)
		return
	}
	if err2 := es.deliver(ctx, dv, d.timeout); err2 != nil && !errors.Is(err2, errClosed) {
		rec.Text += fmt.Sprintf("; the error channel's %s failed too: %v", es, err2)
		d.lastResort(rec)
	}
}

// reportRecovery notes on the log channel that a sink works again.
func (d *Dispatcher) reportRecovery(ctx context.Context, s sink, ch string, lost int64) {
	rec := Record{
		Channel: ChannelLog,
		Text:    fmt.Sprintf("oob: %s works again for %q records; %d record(s) were lost meanwhile", s, ch, lost),
		Details: map[string]any{"sink": s.String(), "channel": ch, "lost": lost},
	}
	stamp(&rec, d.pid)
	dv := &delivery{r: rec}
	if !d.passes(dv) {
		return
	}
	ls := d.sinkFor(ChannelLog)
	if _, isFunc := ls.(*funcSink); isFunc && delivering(ctx) {
		d.lastResort(rec)
		return
	}
	if err := ls.deliver(ctx, dv, d.timeout); err != nil && !errors.Is(err, errClosed) {
		d.lastResort(rec)
	}
}

// lastResort writes r to Options.Stderr and ignores any failure: there is
// nowhere left to report it.
func (d *Dispatcher) lastResort(r Record) {
	stamp(&r, d.pid)
	_ = d.stderr.deliver(context.Background(), &delivery{r: r}, d.timeout)
}

// Close closes the files the Dispatcher opened; Handle does nothing after
// Close. Calling Close again returns the first call's result.
func (d *Dispatcher) Close() error {
	d.once.Do(func() {
		d.closed.Store(true)
		var errs []error
		for _, s := range d.all {
			if err := s.close(); err != nil {
				errs = append(errs, err)
			}
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}
