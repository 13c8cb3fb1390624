package oob_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
)

// TestEachHandlingGetsItsChannel sends records on several channels and
// checks that each sink received exactly the records of its channels.
func TestEachHandlingGetsItsChannel(t *testing.T) {
	type sinkWant struct {
		stdout, stderr, file, router []string
		queues                       map[string][]string
	}
	tests := []struct {
		name string
		// handling; "FILE" in a value is replaced by a path in t.TempDir.
		handling oob.Handling
		send     []oob.Record
		want     sinkWant
	}{
		{
			name:     "defaults with debug to a file",
			handling: oob.Handling{"log": "1", "error": "2", "alert": "2", "debug": "FILE"},
			send: []oob.Record{
				{Channel: "log", Text: "l1"}, {Channel: "error", Text: "e1"}, {Channel: "alert", Text: "a1"},
				{Channel: "debug", Text: "d1"}, {Channel: "log", Text: "l2"},
			},
			want: sinkWant{stdout: []string{"l1", "l2"}, stderr: []string{"e1", "a1"}, file: []string{"d1"}},
		},
		{
			name:     "every kind at once",
			handling: oob.Handling{"log": "1", "error": "2", "alert": "ALERTS", "debug": "FILE", "audit": "router"},
			send: []oob.Record{
				{Channel: "audit", Text: "r1"}, {Channel: "alert", Text: "a1"}, {Channel: "log", Text: "l1"},
				{Channel: "debug", Text: "d1"}, {Channel: "error", Text: "e1"}, {Channel: "alert", Text: "a2"},
			},
			want: sinkWant{stdout: []string{"l1"}, stderr: []string{"e1"}, file: []string{"d1"}, router: []string{"r1"},
				queues: map[string][]string{"ALERTS": {"a1", "a2"}}},
		},
		{
			name:     "unknown channel goes where error goes",
			handling: oob.Handling{"log": "1", "error": "ERRQ"},
			send:     []oob.Record{{Channel: "mine", Text: "m1"}, {Channel: "error", Text: "e1"}, {Channel: "debug", Text: "d1"}, {Channel: "log", Text: "l1"}},
			want:     sinkWant{stdout: []string{"l1"}, queues: map[string][]string{"ERRQ": {"m1", "e1", "d1"}}},
		},
		{
			name:     "no error handling means stderr",
			handling: oob.Handling{"log": "1"},
			send:     []oob.Record{{Channel: "alert", Text: "a1"}, {Channel: "error", Text: "e1"}},
			want:     sinkWant{stderr: []string{"a1", "e1"}},
		},
		{
			name:     "two channels to one file share it",
			handling: oob.Handling{"log": "FILE", "debug": "FILE"},
			send:     []oob.Record{{Channel: "log", Text: "l1"}, {Channel: "debug", Text: "d1"}, {Channel: "log", Text: "l2"}},
			want:     sinkWant{file: []string{"l1", "d1", "l2"}},
		},
		{
			name:     "empty channel is log",
			handling: oob.Handling{"log": "1"},
			send:     []oob.Record{{Text: "nameless"}},
			want:     sinkWant{stdout: []string{"nameless"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "oob.out")
			h := oob.Handling{}
			for ch, how := range tt.handling {
				h[ch] = strings.ReplaceAll(how, "FILE", path)
			}
			r := newRig(t, h, oob.Options{DebugLevel: 1})
			for _, rec := range tt.send {
				r.d.Handle(t.Context(), rec)
			}
			check := func(what string, got, want []string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("%s: got %q, want %q", what, got, want)
				}
			}
			check("stdout", texts(r.stdout.records(t)), tt.want.stdout)
			check("stderr", texts(r.stderr.records(t)), tt.want.stderr)
			check("file", texts(fileRecords(t, path)), tt.want.file)
			check("router", r.rec.texts(t, ""), tt.want.router)
			r.rec.mu.Lock()
			queues := map[string]bool{}
			for _, s := range r.rec.got {
				if s.qname != "" {
					queues[s.qname] = true
				}
			}
			r.rec.mu.Unlock()
			for q := range tt.want.queues {
				queues[q] = true
			}
			for q := range queues {
				check("queue "+q, r.rec.texts(t, q), tt.want.queues[q])
			}
		})
	}
}

// TestRecordsCarryTheirFields checks that what a sink receives is the
// record's message, stamped with time and pid when they were missing.
func TestRecordsCarryTheirFields(t *testing.T) {
	r := newRig(t, oob.Handling{"alert": "Q", "log": "1"}, oob.Options{})
	alert := map[string]any{"bucket": "Foo:local.cpu.one_core", "level": "warn", "value": 1.5}
	r.d.Handle(t.Context(), oob.Record{Channel: "alert", Text: "cpu", Task: "Foo", PID: 77, Time: when, Details: alert})
	before := time.Now()
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "stamped"})

	r.rec.mu.Lock()
	if len(r.rec.got) != 1 {
		r.rec.mu.Unlock()
		t.Fatalf("queue sends: got %d, want 1", len(r.rec.got))
	}
	got := r.rec.got[0].m
	r.rec.mu.Unlock()
	want := oob.Record{Channel: "alert", Text: "cpu", Task: "Foo", PID: 77, Time: when, Details: alert}.Message()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("queue message: got %v, want %v", got, want)
	}

	recs := r.stdout.records(t)
	if len(recs) != 1 {
		t.Fatalf("stdout records: got %d, want 1", len(recs))
	}
	if recs[0].PID != os.Getpid() {
		t.Errorf("stamped pid: got %d, want %d", recs[0].PID, os.Getpid())
	}
	if recs[0].Time.Before(before.Add(-time.Second)) || recs[0].Time.After(time.Now().Add(time.Second)) {
		t.Errorf("stamped time: got %v, want about %v", recs[0].Time, before)
	}
}

func TestHumanLines(t *testing.T) {
	tests := []struct {
		name string
		r    oob.Record
		want string
	}{
		{"log with task and detail", oob.Record{Channel: "log", Text: "text", Task: "Task", PID: 1234, Time: when, Details: map[string]any{"k": "v"}},
			"2026-11-26T20:27:36.123Z 1234 LOG Task: text k=v\n"},
		{"no task", oob.Record{Channel: "error", Text: "bad thing", PID: 1, Time: when},
			"2026-11-26T20:27:36.123Z 1 ERROR bad thing\n"},
		{"custom channel upper-cased, local time shown in UTC", oob.Record{Channel: "my_chan", Text: "x", PID: 1, Time: when.In(time.FixedZone("X", 3600))},
			"2026-11-26T20:27:36.123Z 1 MY_CHAN x\n"},
		{"details sorted, nested, quoted, lists as JSON", oob.Record{Channel: "alert", Text: "t", PID: 1, Time: when, Details: map[string]any{
			"z": int64(1), "a": map[string]any{"b": 1.5, "c": true}, "s": "two words", "l": []any{"x", int64(2)}, "e": "", "n": nil}},
			`2026-11-26T20:27:36.123Z 1 ALERT t a.b=1.5 a.c=true e="" l=["x",2] n=null s="two words" z=1` + "\n"},
		{"multi-line text indents continuations", oob.Record{Channel: "error", Text: "panic: x\ngoroutine 1\n", PID: 1, Time: when},
			"2026-11-26T20:27:36.123Z 1 ERROR panic: x\n\tgoroutine 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out lockedBuffer
			d := oob.New(oob.Options{Handling: oob.Handling{"log": "1", "error": "1", "alert": "1", "my_chan": "1"},
				Stdout: &out, Stderr: io.Discard, Terminal: func(w io.Writer) bool { return w == &out }})
			t.Cleanup(func() { d.Close() })
			d.Handle(t.Context(), tt.r)
			if got := out.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestUnwritablePathReportsOnceAndRecovers uses a path under a regular
// file (never writable), then makes the directory real.
func TestUnwritablePathReportsOnceAndRecovers(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "logs")
	if err := os.WriteFile(blocker, []byte("a file, not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(blocker, "debug.out")
	r := newRig(t, oob.Handling{"log": "1", "error": "2", "debug": path}, oob.Options{DebugLevel: 1, RotateCheck: -1})

	for i := range 5 {
		r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: fmt.Sprint("lost ", i)})
	}
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "still running"})
	errs := r.stderr.records(t)
	if len(errs) != 1 {
		t.Fatalf("error records after 5 failed writes: got %d (%q), want 1", len(errs), texts(errs))
	}
	if e := errs[0]; e.Channel != "error" || !strings.Contains(e.Text, path) || e.Details["channel"] != "debug" {
		t.Errorf("error record: got %+v, want one on channel error naming %s and channel debug", e, path)
	}
	if got := texts(r.stdout.records(t)); !slices.Equal(got, []string{"still running"}) {
		t.Errorf("log records while the file fails: got %q, want [still running]", got)
	}

	// Make the path writable: the next record lands, and the log says so.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(blocker, 0o755); err != nil {
		t.Fatal(err)
	}
	r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "back"})
	if got := texts(fileRecords(t, path)); !slices.Equal(got, []string{"back"}) {
		t.Errorf("file after recovery: got %q, want [back]", got)
	}
	logs := r.stdout.records(t)
	if len(logs) != 2 || !strings.Contains(logs[1].Text, "works again") || logs[1].Details["lost"] != int64(5) {
		t.Errorf("log after recovery: got %+v, want a second record saying it works again with lost=5", logs)
	}

	// Failing again after working is reported again (once).
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "lost again"})
	r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "lost again"})
	if got := len(r.stderr.records(t)); got != 2 {
		t.Errorf("error records after a second failure: got %d, want 2", got)
	}
}

func TestFileRotation(t *testing.T) {
	tests := []struct {
		name        string
		rotateCheck time.Duration
		move        func(path string) error
		wantOld     []string // what the moved-away file holds (nil when deleted)
		wantPath    []string // what the path holds afterwards
	}{
		{"renamed away", -1, func(p string) error { return os.Rename(p, p+".1") }, []string{"one"}, []string{"two"}},
		{"deleted", -1, os.Remove, nil, []string{"two"}},
		{"renamed, checked only hourly", time.Hour, func(p string) error { return os.Rename(p, p+".1") }, []string{"one", "two"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.out")
			r := newRig(t, oob.Handling{"log": path}, oob.Options{RotateCheck: tt.rotateCheck})
			r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "one"})
			if err := tt.move(path); err != nil {
				t.Fatal(err)
			}
			r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "two"})
			if got := texts(fileRecords(t, path+".1")); !slices.Equal(got, tt.wantOld) {
				t.Errorf("moved-away file: got %q, want %q", got, tt.wantOld)
			}
			if got := texts(fileRecords(t, path)); !slices.Equal(got, tt.wantPath) {
				t.Errorf("file at the path: got %q, want %q", got, tt.wantPath)
			}
			if got := r.stderr.String(); got != "" {
				t.Errorf("stderr: got %q, want nothing", got)
			}
		})
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.out")
	r := newRig(t, oob.Handling{"log": path}, oob.Options{})
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "x"})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm() &^ 0o022; got != 0o644&^0o022 {
		t.Errorf("mode: got %v, want 0644 (less umask)", fi.Mode().Perm())
	}
}

// TestFailingErrorChannelFallsBackToStderr: when the error channel's own
// sink fails, reports go to stderr, once per failing sink.
func TestFailingErrorChannelFallsBackToStderr(t *testing.T) {
	r := newRig(t, oob.Handling{"log": "LOGQ", "error": "ERRQ"}, oob.Options{})
	r.rec.setFail(errors.New("bus down"))
	for range 5 {
		r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "l"})
		r.d.Handle(t.Context(), oob.Record{Channel: "error", Text: "e"})
	}
	lines := r.stderr.records(t)
	if len(lines) != 2 {
		t.Fatalf("stderr records: got %d (%q), want 2 (one per failing sink)", len(lines), texts(lines))
	}
	for i, want := range []string{"queue LOGQ", "queue ERRQ"} {
		if !strings.Contains(lines[i].Text, want) || !strings.Contains(lines[i].Text, "bus down") {
			t.Errorf("stderr record %d: got %q, want it to name %s and the cause", i, lines[i].Text, want)
		}
	}
	if !strings.Contains(lines[0].Text, "the error channel's queue ERRQ failed too") {
		t.Errorf("first report: got %q, want it to say the error channel failed too", lines[0].Text)
	}
}

func TestMissingSendFuncsAreReported(t *testing.T) {
	var stderr lockedBuffer
	d := oob.New(oob.Options{Handling: oob.Handling{"log": "router", "alert": "Q"}, Stderr: &stderr, Stdout: io.Discard, Terminal: notTerminal})
	t.Cleanup(func() { d.Close() })
	d.Handle(t.Context(), oob.Record{Channel: "log", Text: "x"})
	d.Handle(t.Context(), oob.Record{Channel: "alert", Text: "x"})
	got := texts(stderr.records(t))
	want := []string{"Options.Emit is nil", "Options.SendQueue is nil"}
	if len(got) != len(want) {
		t.Fatalf("stderr: got %q, want %d reports", got, len(want))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("report %d: got %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// TestNoLoopThroughTheRouter: Emit itself raises an error record while
// error goes to the router as well; it must land on stderr, not loop or
// deadlock.
func TestNoLoopThroughTheRouter(t *testing.T) {
	var d *oob.Dispatcher
	var calls int
	var mu sync.Mutex
	emit := func(ctx context.Context, m message.Message) error {
		mu.Lock()
		calls++
		mu.Unlock()
		d.Handle(ctx, oob.Record{Channel: "error", Text: "router trouble"})
		return nil
	}
	r := newRig(t, oob.Handling{"log": "router", "error": "router"}, oob.Options{Emit: emit})
	d = r.d
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "hello"})
	if calls != 1 {
		t.Errorf("Emit calls: got %d, want 1", calls)
	}
	if got := texts(r.stderr.records(t)); !slices.Equal(got, []string{"router trouble"}) {
		t.Errorf("stderr: got %q, want [router trouble]", got)
	}
}

func TestPanickingSendIsReported(t *testing.T) {
	r := newRig(t, oob.Handling{"alert": "Q", "error": "2"}, oob.Options{
		SendQueue: func(context.Context, string, message.Message) error { panic("kaboom") },
	})
	r.d.Handle(t.Context(), oob.Record{Channel: "alert", Text: "a"})
	r.d.Handle(t.Context(), oob.Record{Channel: "alert", Text: "b"})
	got := texts(r.stderr.records(t))
	if len(got) != 1 || !strings.Contains(got[0], "panic in queue Q: kaboom") {
		t.Errorf("stderr: got %q, want one report of the panic", got)
	}
}

// blockingWriter blocks every Write until released; entered is closed
// when the first Write has begun.
type blockingWriter struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(p), nil
}

// TestStuckSinkDoesNotBlockForever: a write that never returns holds its
// sink; other callers give up after the timeout, report once, and later
// callers do not wait again.
func TestStuckSinkDoesNotBlockForever(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	var stderr lockedBuffer
	d := oob.New(oob.Options{Handling: oob.Handling{"log": "1", "error": "2"}, Stdout: w, Stderr: &stderr,
		Terminal: notTerminal, Timeout: 20 * time.Millisecond})
	t.Cleanup(func() { d.Close() })

	stuck := make(chan struct{})
	go func() {
		defer close(stuck)
		d.Handle(context.Background(), oob.Record{Channel: "log", Text: "stuck"})
	}()
	t.Cleanup(func() {
		close(w.release)
		<-stuck
	})
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first write never started")
	}
	for range 4 {
		d.Handle(t.Context(), oob.Record{Channel: "log", Text: "dropped"})
	}
	got := texts(stderr.records(t))
	if len(got) != 1 || !strings.Contains(got[0], "sink busy") {
		t.Errorf("stderr: got %q, want one report that stdout is busy", got)
	}
}

func TestConcurrentLinesDoNotInterleave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "all.out")
	r := newRig(t, oob.Handling{"log": "1", "debug": path, "alert": "1"}, oob.Options{DebugLevel: 1})
	const workers, each = 8, 200
	long := strings.Repeat("x", 5000) // longer than a pipe's atomic write
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ch := []string{"log", "debug", "alert"}[i%3]
				r.d.Handle(context.Background(), oob.Record{Channel: ch, Text: fmt.Sprintf("%d-%d %s", w, i, long)})
			}
		})
	}
	wg.Wait()
	total := len(r.stdout.records(t)) + len(fileRecords(t, path))
	if total != workers*each {
		t.Errorf("records read back: got %d, want %d", total, workers*each)
	}
}

func TestDebugLevel(t *testing.T) {
	tests := []struct {
		name       string
		level      int
		wantFile   bool
		wantEnable map[int]bool
	}{
		{"-d 0 drops debug, creates no file", 0, false, map[int]bool{0: false, 1: false, 2: false}},
		{"-d 1", 1, true, map[int]bool{0: true, 1: true, 2: false}},
		{"-d 3", 3, true, map[int]bool{1: true, 3: true, 4: false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "debug.out")
			r := newRig(t, oob.Handling{"debug": path}, oob.Options{DebugLevel: tt.level})
			r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "d"})
			if _, err := os.Stat(path); (err == nil) != tt.wantFile {
				t.Errorf("debug file exists: got %v, want %v", err == nil, tt.wantFile)
			}
			for lvl, want := range tt.wantEnable {
				if got := r.d.DebugEnabled(lvl); got != want {
					t.Errorf("DebugEnabled(%d): got %v, want %v", lvl, got, want)
				}
			}
		})
	}
}

func TestSetDebugLevelLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "debug.out")
	r := newRig(t, oob.Handling{"debug": path}, oob.Options{})
	r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "dropped"})
	r.d.SetDebugLevel(2)
	r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "kept"})
	r.d.SetDebugLevel(-1)
	r.d.Handle(t.Context(), oob.Record{Channel: "debug", Text: "dropped again"})
	if got := texts(fileRecords(t, path)); !slices.Equal(got, []string{"kept"}) {
		t.Errorf("debug file: got %q, want [kept]", got)
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.out")
	r := newRig(t, oob.Handling{"log": path, "error": "2"}, oob.Options{})
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "before"})
	if err := r.d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.d.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "after"})
	r.d.Handle(t.Context(), oob.Record{Channel: "error", Text: "after"})
	if got := texts(fileRecords(t, path)); !slices.Equal(got, []string{"before"}) {
		t.Errorf("file: got %q, want [before]", got)
	}
	if got := r.stderr.String(); got != "" {
		t.Errorf("stderr after Close: got %q, want nothing", got)
	}
}
