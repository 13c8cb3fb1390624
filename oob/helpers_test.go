package oob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
)

// lockedBuffer is a writer safe to read while a Dispatcher writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	err error // returned by Write when set
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the non-empty lines written so far.
func (b *lockedBuffer) lines() []string {
	var out []string
	for l := range strings.Lines(b.String()) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// records decodes every JSON line written so far.
func (b *lockedBuffer) records(t *testing.T) []oob.Record {
	t.Helper()
	return decodeRecords(t, strings.NewReader(b.String()))
}

func decodeRecords(t *testing.T, r io.Reader) []oob.Record {
	t.Helper()
	var out []oob.Record
	dec := message.NewDecoder(r)
	for {
		m, err := dec.Decode()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode a JSON line: %v", err)
		}
		rec, err := oob.RecordFromMessage(m)
		if err != nil {
			t.Fatalf("record from line %v: %v", m, err)
		}
		out = append(out, rec)
	}
}

// fileRecords decodes the JSON lines of the file at path (none if it does
// not exist).
func fileRecords(t *testing.T, path string) []oob.Record {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	return decodeRecords(t, f)
}

// sent is one message handed to Emit or SendQueue.
type sent struct {
	qname string // "" for Emit
	m     message.Message
}

// recorder records Emit and SendQueue calls; fail makes them fail.
type recorder struct {
	mu   sync.Mutex
	got  []sent
	fail error
}

func (r *recorder) emit(_ context.Context, m message.Message) error {
	return r.add("", m)
}

func (r *recorder) send(_ context.Context, q string, m message.Message) error {
	return r.add(q, m)
}

func (r *recorder) add(q string, m message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, sent{qname: q, m: m})
	return nil
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

// texts returns the texts of the records sent to qname ("" = the router).
func (r *recorder) texts(t *testing.T, qname string) []string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.got {
		if s.qname != qname {
			continue
		}
		rec, err := oob.RecordFromMessage(s.m)
		if err != nil {
			t.Fatalf("record from message sent to %q: %v", qname, err)
		}
		out = append(out, rec.Text)
	}
	return out
}

func texts(recs []oob.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Text)
	}
	return out
}

func notTerminal(io.Writer) bool { return false }

// rig is a Dispatcher with injected stdout, stderr and a recorder.
type rig struct {
	d      *oob.Dispatcher
	stdout *lockedBuffer
	stderr *lockedBuffer
	rec    *recorder
}

// newRig builds a Dispatcher for h (JSON lines on stdout and stderr) and
// closes it when the test ends. opts fields left zero are filled in.
func newRig(t *testing.T, h oob.Handling, opts oob.Options) *rig {
	t.Helper()
	r := &rig{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, rec: &recorder{}}
	opts.Handling = h
	opts.Stdout, opts.Stderr = r.stdout, r.stderr
	if opts.Emit == nil {
		opts.Emit = r.rec.emit
	}
	if opts.SendQueue == nil {
		opts.SendQueue = r.rec.send
	}
	if opts.Terminal == nil {
		opts.Terminal = notTerminal
	}
	r.d = oob.New(opts)
	t.Cleanup(func() {
		if err := r.d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}
