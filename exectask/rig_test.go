package exectask_test

import (
	"context"
	"fmt"
	"github.com/multimodule/multimodule/mmtest"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// rig is a task.Runtime that records what a task does, so the adapter can
// be driven directly (no daemon): a producer calls Message, the rig is the
// sink.
type rig struct {
	t      testing.TB
	ctx    context.Context
	config map[string]any
	log    *slog.Logger
	logs   *logSink

	mu     sync.Mutex
	emits  []message.Message
	sends  []string
	outs   []string // "channel: text"
	recurs map[string]func(*task.Context)
	count  int // emits, also when not kept
	keep   bool
}

func newRig(t testing.TB) *rig {
	t.Helper()
	logs := &logSink{}
	return &rig{
		t: t, ctx: t.Context(), keep: true,
		logs: logs, log: slog.New(logs),
		recurs: map[string]func(*task.Context){},
	}
}

func (r *rig) Context() context.Context { return r.ctx }
func (r *rig) Config() map[string]any   { return r.config }
func (r *rig) Logger() *slog.Logger     { return r.log }
func (r *rig) Process() string          { return "main" }

func (r *rig) Emit(msg message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if r.keep {
		r.emits = append(r.emits, msg)
	}
	return nil
}

func (r *rig) Send(qname, destination string, msg message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, qname+"@"+destination)
	return nil
}

func (r *rig) Recur(name string, interval time.Duration, work func(*task.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recurs[name] = work
}

func (r *rig) StopRecur(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.recurs, name)
}

func (r *rig) StopRecurs() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.recurs)
}

func (r *rig) Out(channel, text string, details map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := channel + ": " + text
	if len(details) > 0 {
		line += fmt.Sprintf(" %v", details)
	}
	r.outs = append(r.outs, line)
}

// takeEmits returns and forgets the emits so far.
func (r *rig) takeEmits() []message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.emits
	r.emits = nil
	return e
}

// outText is every out-of-band record so far, one a line.
func (r *rig) outText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.outs, "\n")
}

// logSink is a slog.Handler keeping record texts.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, r.Message)
	return nil
}
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logSink) WithGroup(string) slog.Handler      { return l }
func (l *logSink) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// taskPath is the absolute path of a test task; it skips t (fails it
// under CI) when the task's interpreter is not installed.
func taskPath(t testing.TB, dir, name string) string {
	t.Helper()
	p := absDir(t, filepath.Join(dir, name))
	mmtest.NeedInterpreter(t, p)
	return p
}

// needExamples skips t (fails it under CI) when the interpreter of one of
// the named examples/exec tasks is not installed.
func needExamples(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		mmtest.NeedInterpreter(t, absDir(t, filepath.Join(examples, n)))
	}
}

// startTask starts the exec task at path on r and configures it.
func startTask(t testing.TB, r *rig, path string, cfg map[string]any, state map[string]any) (*exectask.Task, *task.Context) {
	t.Helper()
	xt, err := exectask.Start(exectask.Spec{Name: filepath.Base(path), Path: path, Logger: r.log, StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	tc := task.NewContext(filepath.Base(path), r)
	tc.SetState(state)
	t.Cleanup(func() { _ = xt.Close(tc) })
	r.config = cfg
	if err := xt.SetConfig(tc, cfg); err != nil {
		t.Fatalf("set config of %s: %v", path, err)
	}
	return xt, tc
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	mmtest.Eventually(t, timeout, f)
}

func intOf(t testing.TB, m message.Message, key string) int64 {
	t.Helper()
	n, ok := message.Int(m[key])
	if !ok {
		t.Fatalf("message %v: %s is not an integer", m, key)
	}
	return n
}

// probeTick asks the Probe task xt to schedule its probe_tick every
// seconds, and returns the scheduled work (failing the test if none is).
func probeTick(t *testing.T, r *rig, xt *exectask.Task, tc *task.Context, every float64) func(*task.Context) {
	t.Helper()
	if err := xt.Message(tc, message.Message{"recur": every}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	work := r.recurs["probe_tick"]
	if work == nil {
		t.Fatalf("got recurs %v, want probe_tick scheduled", r.recurs)
	}
	return work
}
