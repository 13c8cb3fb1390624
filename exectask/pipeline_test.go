package exectask_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
)

// handled is what one Message call returned and what the task emitted
// during it.
type handled struct {
	err   error
	emits []message.Message
}

// feed hands msgs to xt as the host does: announced (Ahead) in runs of
// batch, then one Message call each, in order. Each call's emits are kept
// with it.
func feed(r *rig, xt *exectask.Task, tc *task.Context, msgs []message.Message, batch int) []handled {
	out := make([]handled, 0, len(msgs))
	for len(msgs) > 0 {
		run := msgs[:min(batch, len(msgs))]
		msgs = msgs[len(run):]
		xt.Ahead(tc, run)
		for _, m := range run {
			err := xt.Message(tc, m)
			out = append(out, handled{err: err, emits: r.takeEmits()})
		}
	}
	return out
}

// numbered is n messages {"n": i}.
func numbered(n int) []message.Message {
	msgs := make([]message.Message, n)
	for i := range msgs {
		msgs[i] = message.Message{"n": int64(i)}
	}
	return msgs
}

// checkOwnEmits fails unless every call i returned no error (but those
// in failing) and emitted exactly one message, its own (n = i).
func checkOwnEmits(t *testing.T, got []handled, failing map[int]string) {
	t.Helper()
	for i, h := range got {
		if want, fail := failing[i]; fail {
			if h.err == nil || !strings.Contains(h.err.Error(), want) {
				t.Errorf("message %d: got error %v, want one with %q", i, h.err, want)
			}
			if len(h.emits) != 0 {
				t.Errorf("message %d (failing): got emits %v, want none", i, h.emits)
			}
			continue
		}
		if h.err != nil {
			t.Errorf("message %d: %v", i, h.err)
		}
		if len(h.emits) != 1 || intOf(t, h.emits[0], "n") != int64(i) {
			t.Errorf("message %d: got emits %v during its Message call, want exactly its own (n=%d)", i, h.emits, i)
		}
	}
}

// TestProtocolVersions: the helper libraries speak 2 and get it; a task
// that offers only 1 (ShellEcho) still gets 1.
func TestProtocolVersions(t *testing.T) {
	for name, want := range map[string]int64{"PyEcho": 2, "PerlCounter": 2, "ShellEcho": 1} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			xt, _ := startTask(t, r, taskPath(t, examples, name), map[string]any{}, nil)
			if got := xt.Protocol(); got != want {
				t.Fatalf("negotiated protocol %d, want %d", got, want)
			}
		})
	}
}

// TestPipelinedOrderAndAttribution: messages announced in runs are in
// flight together (protocol 2) and still answered one per Message call,
// in order: each call carries out exactly its own message's emits and
// returns its own failure; the state follows every message. A protocol-1
// task gets the same, one request at a time.
func TestPipelinedOrderAndAttribution(t *testing.T) {
	t.Run("Probe (protocol 2)", func(t *testing.T) {
		r := newRig(t)
		xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
		msgs := numbered(300)
		msgs[37]["fail"] = "bad 37"
		got := feed(r, xt, tc, msgs, 64)
		checkOwnEmits(t, got, map[int]string{37: "RuntimeError: bad 37"})
		count, burst := int64(0), int64(0)
		for i, h := range got {
			if len(h.emits) == 1 {
				count++
				if c := intOf(t, h.emits[0], "count"); c != count {
					t.Fatalf("message %d: got count %d, want %d (in order, each once)", i, c, count)
				}
				burst = max(burst, intOf(t, h.emits[0], "burst"))
			}
		}
		if got := intOf(t, tc.State(), "count"); got != 299 {
			t.Errorf("host's state count %d, want 299", got)
		}
		if xt.MaxInFlight() < 2 || burst < 2 {
			t.Errorf("at most %d requests in flight, at most %d per read in the task: want several (pipelined)", xt.MaxInFlight(), burst)
		}
		if xt.MaxInFlight() > exectask.DefaultWindow {
			t.Errorf("%d requests in flight, want at most the window (%d)", xt.MaxInFlight(), exectask.DefaultWindow)
		}
	})
	t.Run("PerlCounter (protocol 2)", func(t *testing.T) {
		r := newRig(t)
		xt, tc := startTask(t, r, taskPath(t, examples, "PerlCounter"), map[string]any{"increment_by": int64(1)}, nil)
		msgs := make([]message.Message, 100)
		for i := range msgs {
			msgs[i] = message.Message{"ct": int64(i)}
		}
		for i, h := range feed(r, xt, tc, msgs, 64) {
			if h.err != nil || len(h.emits) != 1 || intOf(t, h.emits[0], "my_ct") != int64(i+1) || intOf(t, h.emits[0], "count") != int64(i+1) {
				t.Fatalf("message %d: got %v %v, want its own emit (my_ct %d, count %d)", i, h.err, h.emits, i+1, i+1)
			}
		}
		if xt.MaxInFlight() < 2 {
			t.Errorf("at most %d requests in flight, want several", xt.MaxInFlight())
		}
	})
	t.Run("ShellEcho (protocol 1)", func(t *testing.T) {
		r := newRig(t)
		xt, tc := startTask(t, r, taskPath(t, examples, "ShellEcho"), map[string]any{}, nil)
		checkOwnEmits(t, feed(r, xt, tc, numbered(10), 64), nil)
		if xt.MaxInFlight() != 1 {
			t.Errorf("%d requests in flight at once to a protocol-1 task, want 1", xt.MaxInFlight())
		}
	})
}

// TestKill9MidWindow: the co-process is killed (SIGKILL) while it hangs
// in one message with the next ones in flight behind it, and its answers
// to the earlier ones perhaps not yet written. Nothing is lost: every
// message not acked goes to the restarted co-process, in order, and each
// Message call still gets exactly its own message's emits.
func TestKill9MidWindow(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	pidFile := filepath.Join(t.TempDir(), "hanging")
	msgs := numbered(40)
	msgs[10]["hang_once"] = pidFile
	done := make(chan []handled, 1)
	go func() { done <- feed(r, xt, tc, msgs, 40) }()
	var pid int
	eventually(t, wait, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(string(b))
		return err
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var got []handled
	select {
	case got = <-done:
	case <-time.After(wait):
		t.Fatalf("the messages were not all handled within %v after the kill", wait)
	}
	checkOwnEmits(t, got, nil)
	if c := intOf(t, tc.State(), "count"); c != 40 {
		t.Errorf("host's state count %d, want 40 (each message counted once in the end)", c)
	}
	if out := r.outText(); !strings.Contains(out, "signal: killed") {
		t.Errorf("error channel:\n%s\nwant the kill reported", out)
	}
	if xt.PID() == pid {
		t.Errorf("co-process pid %d after the kill, want a restarted one", pid)
	}
}

// TestCrashIsBlamedOnItsMessage: a message in the middle of a window
// kills the co-process every time. The task answers a burst with one
// write, so the host sees the crash while waiting for the first message
// of the window; the messages are then given one at a time, so only the
// one that crashes it fails (after MaxAttempts) and the others are
// handled.
func TestCrashIsBlamedOnItsMessage(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	msgs := numbered(12)
	msgs[5]["crash"] = true
	got := feed(r, xt, tc, msgs, 12)
	checkOwnEmits(t, got, map[int]string{5: fmt.Sprintf("after %d attempts", exectask.MaxAttempts)})
}

// TestBarriers: a tick, a config or a state sent while messages are in
// flight waits until they are answered (their emits are carried out
// first, in order), and is alone in flight; the messages' Message calls
// then return their results without sending them again.
func TestBarriers(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	tick := probeTick(t, r, xt, tc, 30)
	barriers := []struct {
		name string
		do   func()
	}{
		{"tick", func() { tick(tc) }},
		{"config", func() {
			if err := xt.SetConfig(tc, map[string]any{"k": "v"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"another message than announced", func() {
			if err := xt.Message(tc, message.Message{"n": int64(99)}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, b := range barriers {
		msgs := numbered(8)
		xt.Ahead(tc, msgs)
		for i := range 2 {
			if err := xt.Message(tc, msgs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if len(r.takeEmits()) != 2 {
			t.Fatalf("%s: want 2 emits before the barrier", b.name)
		}
		// The rest were written with the first: in flight now. (A message
		// other than the one announced breaks the host's promise: what is
		// in flight is answered, the rest of the announcement dropped.)
		b.do()
		emits := r.takeEmits()
		if len(emits) < 6 {
			t.Fatalf("%s: got emits %v, want the 6 messages in flight answered first", b.name, emits)
		}
		for i, m := range emits[:6] {
			if got := intOf(t, m, "n"); got != int64(i+2) {
				t.Fatalf("%s: emit %d is %v, want message %d (in flight before the barrier, in order)", b.name, i, m, i+2)
			}
		}
		if b.name == "another message than announced" {
			if len(emits) != 7 || intOf(t, emits[6], "n") != 99 {
				t.Fatalf("got emits %v, want message 99 last", emits)
			}
			if !strings.Contains(r.logs.text(), "announced messages dropped") {
				t.Errorf("log:\n%s\nwant a warning about the dropped announcement", r.logs.text())
			}
			continue
		}
		if b.name == "tick" && (len(emits) != 7 || intOf(t, emits[6], "tick") != 1) {
			t.Fatalf("tick: got emits %v, want the tick's after the messages'", emits)
		}
		for i := 2; i < 8; i++ {
			if err := xt.Message(tc, msgs[i]); err != nil {
				t.Fatal(err)
			}
			if e := r.takeEmits(); len(e) != 0 {
				t.Fatalf("%s: message %d emitted %v again", b.name, i, e)
			}
		}
	}
	if xt.MaxInFlight() < 6 {
		t.Errorf("at most %d in flight, want the 6 behind each barrier", xt.MaxInFlight())
	}
	// The state changed behind the task's back (an operator's transform,
	// which the host applies between announced runs) goes first, before
	// the next run is written.
	tc.State()["count"] = int64(1000)
	got := feed(r, xt, tc, numbered(5), 5)
	checkOwnEmits(t, got, nil)
	for i, h := range got {
		if c := intOf(t, h.emits[0], "count"); c != int64(1001+i) {
			t.Fatalf("message %d: got count %d, want %d (counting on from the new state)", i, c, 1001+i)
		}
	}
}

// TestPipelineThroughTheHost: a burst waiting in an exec task's mailbox
// reaches its co-process pipelined (several requests per read), and comes
// out in order, each message once.
func TestPipelineThroughTheHost(t *testing.T) {
	mmtest.NeedInterpreter(t, absDir(t, filepath.Join(testdata, "Probe")))
	env := mmtest.NewEnv(t)
	h, _ := hostOn(t, env, absDir(t, testdata), 5*time.Second)
	send := func(m message.Message) {
		t.Helper()
		if err := h.Send(context.Background(), "Probe", m); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ConfigureAll(map[string]any{
		"Router": map[string]any{"routes": []any{map[string]any{
			"match":    map[string]any{"source": "Probe"},
			"forwards": []any{map[string]any{"qname": "out_Probe"}},
		}}},
		"Probe": map[string]any{},
	}); err != nil {
		t.Fatal(err)
	}
	// Loaded and handling, and caught up with its bus queue: from now on
	// sends go to its mailbox (the bus gives a task one message at a time).
	send(message.Message{"n": int64(-1)})
	if m := env.Recv("out_Probe", wait); intOf(t, m, "n") != -1 {
		t.Fatalf("got %v, want n=-1", m)
	}
	eventually(t, wait, func() error {
		if !h.Settled("Probe") {
			return fmt.Errorf("Probe has not caught up with its bus queue")
		}
		return nil
	})
	// The task holds on to its first message while 200 more wait.
	release := filepath.Join(t.TempDir(), "release")
	send(message.Message{"n": int64(0), "hold": release})
	for i := 1; i <= 200; i++ {
		send(message.Message{"n": int64(i)})
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	burst := int64(0)
	for i := 0; i <= 200; i++ {
		m := env.Recv("out_Probe", wait)
		if got := intOf(t, m, "n"); got != int64(i) {
			t.Fatalf("got message %d, want %d (in order, each once)", got, i)
		}
		burst = max(burst, intOf(t, m, "burst"))
	}
	if burst < 2 {
		t.Errorf("the co-process read at most %d request per read: want the host to pipeline a waiting burst", burst)
	}

	// A state transform in the middle of a burst (the host applies it
	// between two messages): the messages before it count on from the old
	// state, those after it from the new one.
	release2 := filepath.Join(t.TempDir(), "release")
	send(message.Message{"n": int64(0), "hold": release2})
	for i := 1; i <= 30; i++ {
		send(message.Message{"n": int64(i)})
	}
	send(message.Message{".multimodule": map[string]any{"transform": map[string]any{"count": 1000}}})
	for i := 31; i <= 60; i++ {
		send(message.Message{"n": int64(i)})
	}
	if err := os.WriteFile(release2, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= 60; i++ {
		m := env.Recv("out_Probe", wait)
		want := int64(203 + i) // 202 counted so far
		if i > 30 {
			want = int64(1000 + i - 30)
		}
		if n, c := intOf(t, m, "n"), intOf(t, m, "count"); n != int64(i) || c != want {
			t.Fatalf("got message %d with count %d, want message %d with count %d", n, c, i, want)
		}
	}
}

// TestBigMessagesInAWindow: the requests in flight are kept within what
// the co-process' stdin pipe holds, so that the host's write never waits
// for a task that is itself waiting for the host to read its answers (a
// deadlock with big messages: the task answers each with an emit as big).
// A message bigger than the pipe goes alone.
func TestBigMessagesInAWindow(t *testing.T) {
	r := newRig(t)
	xt, tc := startTask(t, r, taskPath(t, testdata, "Probe"), map[string]any{}, nil)
	msgs := numbered(40)
	for i, m := range msgs {
		size := 20 << 10
		if i == 17 {
			size = 300 << 10
		}
		m["pad"] = strings.Repeat("x", size)
	}
	done := make(chan []handled, 1)
	go func() { done <- feed(r, xt, tc, msgs, 40) }()
	select {
	case got := <-done:
		checkOwnEmits(t, got, nil)
		for i, h := range got {
			if len(h.emits) == 1 && h.emits[0]["pad"] != msgs[i]["pad"] {
				t.Fatalf("message %d: its pad came back changed", i)
			}
		}
	case <-time.After(wait):
		t.Fatalf("40 big messages not handled within %v: deadlocked?", wait)
	}
	if xt.MaxInFlight() < 1 || xt.MaxInFlight() > 2 {
		t.Errorf("%d requests of 20 KiB in flight, want 1 or 2 (half a 64 KiB pipe)", xt.MaxInFlight())
	}
}
