package oob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multimodule/multimodule/message"
)

// errClosed is returned by a sink used after Close; such records are
// dropped silently.
var errClosed = errors.New("oob: dispatcher closed")

// errBusy is wrapped when a sink stayed locked longer than the timeout
// (a write or send that did not return).
var errBusy = errors.New("sink busy")

// delivery is one record on its way, with its message form built at most
// once (for filters and for JSON sinks alike).
type delivery struct {
	r Record
	m message.Message
}

func (dv *delivery) message() message.Message {
	if dv.m == nil {
		dv.m = dv.r.Message()
	}
	return dv.m
}

// sink is where records of one or more channels go.
type sink interface {
	// deliver writes or sends one record; wait bounds how long it waits
	// for the sink to be free.
	deliver(ctx context.Context, dv *delivery, wait time.Duration) error
	close() error
	state() *sinkState
	String() string
}

// sinkState is what the dispatcher tracks per sink to report a failure
// once, and a recovery once.
type sinkState struct {
	failing atomic.Bool  // the last delivery failed; a report was made
	busy    atomic.Bool  // the last failure was a timeout on the lock
	lost    atomic.Int64 // records dropped since the failure was reported
}

func (s *sinkState) state() *sinkState { return s }

// gate is a lock that can be given up on after a timeout, so one stuck
// write never stalls its callers forever.
type gate chan struct{}

func newGate() gate { return make(gate, 1) }

func (g gate) lock(wait time.Duration) bool {
	select {
	case g <- struct{}{}:
		return true
	default:
	}
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case g <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (g gate) unlock() { <-g }

func busyError(wait time.Duration) error {
	return fmt.Errorf("%w: still locked by a write or send after %v", errBusy, wait)
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= 64<<10 {
		bufPool.Put(b)
	}
}

// writerSink writes lines to stdout or stderr.
type writerSink struct {
	sinkState
	name  string
	w     io.Writer
	human bool
	// journal: the writer is the systemd journal's stream; lines carry a
	// priority prefix and no time (journal.go). It wins over human.
	journal bool
	gate    gate // shared when stdout and stderr are one writer
}

func (s *writerSink) String() string { return s.name }
func (s *writerSink) close() error   { return nil }

func (s *writerSink) deliver(_ context.Context, dv *delivery, wait time.Duration) error {
	buf := getBuf()
	defer putBuf(buf)
	switch {
	case s.journal:
		buf.Write(appendJournal(buf.AvailableBuffer(), dv.r))
	case s.human:
		buf.Write(appendHuman(buf.AvailableBuffer(), dv.r))
	default:
		buf.Write(appendRecordJSON(buf.AvailableBuffer(), dv.r))
	}
	return s.write(buf.Bytes(), wait)
}

func (s *writerSink) write(line []byte, wait time.Duration) error {
	if !s.gate.lock(wait) {
		return busyError(wait)
	}
	defer s.gate.unlock()
	_, err := s.w.Write(line)
	return err
}

// sameWriter reports whether a and b are the same writer, without
// panicking on writers that cannot be compared.
func sameWriter(a, b io.Writer) bool {
	ta := reflect.TypeOf(a)
	if ta == nil || ta != reflect.TypeOf(b) || !ta.Comparable() {
		return false
	}
	return a == b
}

// isTerminal is the default Options.Terminal: a character device.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// fileSink appends JSON lines to a file, opening it on first use and
// re-opening it when the path no longer names the open file (rotated,
// renamed or deleted).
type fileSink struct {
	sinkState
	path        string        // absolute, cleaned
	checkEvery  time.Duration // <0: check before every write
	gate        gate
	f           *os.File // nil: not open
	fi          os.FileInfo
	lastChecked time.Time
	closed      bool
}

func (s *fileSink) String() string { return "file " + s.path }

func (s *fileSink) deliver(_ context.Context, dv *delivery, wait time.Duration) error {
	buf := getBuf()
	defer putBuf(buf)
	buf.Write(appendRecordJSON(buf.AvailableBuffer(), dv.r))
	if !s.gate.lock(wait) {
		return busyError(wait)
	}
	defer s.gate.unlock()
	if s.closed {
		return errClosed
	}
	if err := s.ensureOpen(); err != nil {
		return err
	}
	if _, err := s.f.Write(buf.Bytes()); err != nil {
		s.f.Close()
		s.f = nil
		return fmt.Errorf("append to %s: %w", s.path, err)
	}
	return nil
}

// ensureOpen (under the gate) opens the file, or re-opens it when the
// path names another file than the one open.
func (s *fileSink) ensureOpen() error {
	if s.f != nil {
		now := time.Time{}
		if s.checkEvery >= 0 {
			now = time.Now()
		}
		if s.checkEvery < 0 || now.Sub(s.lastChecked) >= s.checkEvery {
			s.lastChecked = now
			if fi, err := os.Stat(s.path); err != nil || !os.SameFile(fi, s.fi) {
				s.f.Close()
				s.f = nil
			}
		}
	}
	if s.f != nil {
		return nil
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s for appending: %w", s.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", s.path, err)
	}
	s.f, s.fi, s.lastChecked = f, fi, time.Now()
	return nil
}

func (s *fileSink) close() error {
	if !s.gate.lock(time.Minute) {
		return fmt.Errorf("oob: close %s: %w", s.path, busyError(time.Minute))
	}
	defer s.gate.unlock()
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("oob: close %s: %w", s.path, err)
	}
	return nil
}

// funcSink hands records, as messages, to the router (Options.Emit) or to
// a queue (Options.SendQueue).
type funcSink struct {
	sinkState
	qname   string // "" for the router
	emit    func(context.Context, message.Message) error
	send    func(context.Context, string, message.Message) error
	timeout time.Duration
	gate    gate
}

func (s *funcSink) String() string {
	if s.qname == "" {
		return "router"
	}
	return "queue " + s.qname
}

func (s *funcSink) close() error { return nil }

// deliveringKey marks a context passed to Emit or SendQueue, so a record
// raised synchronously inside that call is not sent back the same way.
type deliveringKey struct{}

func delivering(ctx context.Context) bool { return ctx.Value(deliveringKey{}) != nil }

func (s *funcSink) deliver(ctx context.Context, dv *delivery, wait time.Duration) (err error) {
	if s.qname == "" && s.emit == nil {
		return errors.New("no router to emit to (Options.Emit is nil)")
	}
	if s.qname != "" && s.send == nil {
		return errors.New("no queue transport (Options.SendQueue is nil)")
	}
	if !s.gate.lock(wait) {
		return busyError(wait)
	}
	defer s.gate.unlock()
	// The caller's cancellation (often: shutdown) must not lose the
	// record; the timeout bounds the call instead.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	cctx = context.WithValue(cctx, deliveringKey{}, true)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in %s: %v", s, p)
		}
	}()
	m := dv.message()
	dv.m = nil // handed over: the receiver owns it now
	if s.qname == "" {
		return s.emit(cctx, m)
	}
	return s.send(cctx, s.qname, m)
}
