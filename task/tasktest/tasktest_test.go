package tasktest_test

import (
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/tasktest"
)

// hooks is a task whose every method is given by the test.
type hooks struct {
	setConfig func(tc *task.Context, config map[string]any) error
	message   func(tc *task.Context, msg message.Message) error
	close     func(tc *task.Context) error
}

func (h *hooks) SetConfig(tc *task.Context, config map[string]any) error {
	if h.setConfig == nil {
		return nil
	}
	return h.setConfig(tc, config)
}

func (h *hooks) Message(tc *task.Context, msg message.Message) error {
	if h.message == nil {
		return nil
	}
	return h.message(tc, msg)
}

func (h *hooks) Close(tc *task.Context) error {
	if h.close == nil {
		return nil
	}
	return h.close(tc)
}

func start(t *testing.T, name string, config map[string]any, tk task.Task) *tasktest.Recorder {
	t.Helper()
	rec := tasktest.New(name, config)
	if err := rec.Start(tk); err != nil {
		t.Fatalf("start: %v", err)
	}
	return rec
}

func TestEmitted(t *testing.T) {
	rec := start(t, "T", nil, &hooks{message: func(tc *task.Context, msg message.Message) error {
		if err := tc.Emit(msg); err != nil {
			return err
		}
		msg["changed_after_emit"] = true // breaks the contract; the record must not show it
		return nil
	}})
	if err := rec.Message(message.Message{"n": 1, "source": "Up", "l": []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	got := rec.Emitted()
	want := []message.Message{{"n": int64(1), "source": "T", "previous_source": "Up", "l": []any{"a"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("emitted: got %v, want %v", got, want)
	}
}

func TestEmitRefusesWhatTheHostRefuses(t *testing.T) {
	var emitErr error
	rec := start(t, "T", nil, &hooks{message: func(tc *task.Context, msg message.Message) error {
		emitErr = tc.Emit(message.Message{"ch": make(chan int)})
		return nil
	}})
	if err := rec.Message(message.Message{}); err != nil {
		t.Fatal(err)
	}
	if emitErr == nil || !errors.Is(emitErr, message.ErrNotJSON) || !strings.Contains(emitErr.Error(), `"ch"`) {
		t.Errorf("emit of a channel: got %v, want an ErrNotJSON error naming \"ch\"", emitErr)
	}
	if n := len(rec.Emitted()); n != 0 {
		t.Errorf("a refused emit was recorded: %d messages", n)
	}
}

func TestSends(t *testing.T) {
	var errs []error
	rec := start(t, "T", nil, &hooks{message: func(tc *task.Context, msg message.Message) error {
		errs = append(errs,
			tc.Send("A", message.Message{"i": 1}),
			tc.SendTo("B", "box2.example.com", message.Message{"i": 2}),
			tc.Send("A", message.Message{"i": 3}),
			tc.SendTo("B", "bad host", message.Message{"i": 4}),
			tc.Send("", message.Message{"i": 5}),
		)
		return nil
	}})
	if err := rec.Message(message.Message{}); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs[:3] {
		if err != nil {
			t.Errorf("send %d: %v", i, err)
		}
	}
	for i, err := range errs[3:] {
		if err == nil {
			t.Errorf("send %d: a bad host or queue name was accepted", i+3)
		}
	}
	wantSends := []tasktest.Send{
		{Queue: "A", Message: message.Message{"i": int64(1)}},
		{Queue: "B", Destination: "box2.example.com", Message: message.Message{"i": int64(2)}},
		{Queue: "A", Message: message.Message{"i": int64(3)}},
	}
	if got := rec.Sends(); !reflect.DeepEqual(got, wantSends) {
		t.Errorf("sends: got %v, want %v", got, wantSends)
	}
	if got, want := rec.Sent("A"), []message.Message{{"i": int64(1)}, {"i": int64(3)}}; !reflect.DeepEqual(got, want) {
		t.Errorf("sent to A: got %v, want %v", got, want)
	}
	if got := rec.Sent("C"); got != nil {
		t.Errorf("sent to C: got %v, want none", got)
	}
}

func TestRecurs(t *testing.T) {
	runs := map[string]int{}
	var stopB, stopUnnamed func()
	rec := start(t, "T", map[string]any{"intervals": map[string]any{"b": 0.5}}, &hooks{
		setConfig: func(tc *task.Context, config map[string]any) error {
			tc.NamedRecur("a", time.Minute, func(*task.Context) { runs["a"]++ })
			tc.NamedRecur("a", 2*time.Minute, func(*task.Context) { runs["a2"]++ })      // replaces a
			stopB = tc.NamedRecur("b", time.Minute, func(*task.Context) { runs["b"]++ }) // config overrides
			tc.NamedRecur("zero", 0, func(*task.Context) {})                             // refused, reported
			stopUnnamed = tc.Recur(time.Hour, func(*task.Context) { runs["unnamed"]++ })
			tc.NamedRecur("c", time.Minute, func(*task.Context) { runs["c"]++ })
			return nil
		},
		message: func(tc *task.Context, msg message.Message) error {
			switch {
			case msg["stop"] == "b":
				stopB()
			case msg["stop"] == "unnamed":
				stopUnnamed()
			case msg["stop"] == "all":
				tc.StopRecurs()
			}
			return nil
		},
	})
	var unnamed string // Recur's job is the one the test did not name
	for name := range rec.Recurs() {
		if !slices.Contains([]string{"a", "b", "c"}, name) {
			unnamed = name
		}
	}
	want := map[string]time.Duration{"a": 2 * time.Minute, "b": 500 * time.Millisecond, "c": time.Minute, unnamed: time.Hour}
	if got := rec.Recurs(); unnamed == "" || !reflect.DeepEqual(got, want) {
		t.Errorf("recurs: got %v, want %v and one unnamed job", got, want)
	}
	if got := rec.Texts("error"); len(got) != 1 || !strings.Contains(got[0], `recur "zero": interval must be positive`) {
		t.Errorf("error records: got %q, want the refused interval of \"zero\"", got)
	}
	for _, name := range []string{"a", "b", unnamed, "b"} {
		if err := rec.RunRecur(name); err != nil {
			t.Errorf("run %s: %v", name, err)
		}
	}
	if want := map[string]int{"a2": 1, "b": 2, "unnamed": 1}; !reflect.DeepEqual(runs, want) {
		t.Errorf("runs: got %v, want %v", runs, want)
	}
	if err := rec.RunRecur("zero"); err == nil || !strings.Contains(err.Error(), `no recurring job "zero"`) {
		t.Errorf("run of an unscheduled job: got %v", err)
	}
	_ = rec.Message(message.Message{"stop": "b"})
	_ = rec.Message(message.Message{"stop": "b"}) // a second stop does nothing more
	_ = rec.Message(message.Message{"stop": "unnamed"})
	if got, want := rec.Recurs(), map[string]time.Duration{"a": 2 * time.Minute, "c": time.Minute}; !reflect.DeepEqual(got, want) {
		t.Errorf("after the stops of b and the unnamed job: got %v, want %v", got, want)
	}
	_ = rec.Message(message.Message{"stop": "all"})
	if got := rec.Recurs(); len(got) != 0 {
		t.Errorf("StopRecurs left %v", got)
	}
	if err := rec.RunRecur("a"); err == nil {
		t.Error("a cancelled job ran")
	}
}

func TestRecurPanicIsAnError(t *testing.T) {
	rec := start(t, "T", nil, &hooks{setConfig: func(tc *task.Context, _ map[string]any) error {
		tc.NamedRecur("boom", time.Second, func(*task.Context) { panic("kaboom") })
		return nil
	}})
	err := rec.RunRecur("boom")
	if err == nil || !strings.Contains(err.Error(), `recur boom panicked: kaboom`) {
		t.Errorf("got %v, want the job's panic", err)
	}
}

func TestRecords(t *testing.T) {
	rec := start(t, "T", nil, &hooks{message: func(tc *task.Context, msg message.Message) error {
		tc.Log("l", "k", 1)
		tc.Debug("d")
		tc.Alert("a")
		tc.Error("e")
		tc.Out("custom", "c", "odd")
		lg := tc.Logger().With("task_attr", "x").WithGroup("g")
		lg.Info("info", "n", 2)
		tc.Logger().Warn("warn", "d", time.Second)
		tc.Logger().Debug("debug")
		tc.Logger().Error("error", "err", errors.New("bad"))
		tc.Logger().Info("to alert", "channel", "alert")
		return nil
	}})
	if err := rec.Message(message.Message{}); err != nil {
		t.Fatal(err)
	}
	want := []tasktest.Record{
		{Channel: "log", Text: "l", Details: map[string]any{"k": 1}},
		{Channel: "debug", Text: "d"},
		{Channel: "alert", Text: "a"},
		{Channel: "error", Text: "e"},
		{Channel: "custom", Text: "c", Details: map[string]any{"!BADKEY": "odd"}},
		{Channel: "log", Text: "info", Details: map[string]any{"task_attr": "x", "g": map[string]any{"n": int64(2)}}},
		{Channel: "log", Text: "warn", Details: map[string]any{"d": "1s"}},
		{Channel: "debug", Text: "debug"},
		{Channel: "error", Text: "error", Details: map[string]any{"err": "bad"}},
		{Channel: "alert", Text: "to alert"},
	}
	if got := rec.Records(); !reflect.DeepEqual(got, want) {
		t.Errorf("records:\ngot  %v\nwant %v", got, want)
	}
	if got, want := rec.Texts("error"), []string{"e", "error"}; !reflect.DeepEqual(got, want) {
		t.Errorf("error texts: got %q, want %q", got, want)
	}
	rec.Reset()
	if n := len(rec.Records()); n != 0 {
		t.Errorf("Reset kept %d records", n)
	}
}

func TestLoggerLevelsAndGroups(t *testing.T) {
	rec := tasktest.New("T", nil)
	lg := rec.TC().Logger() // a Context works without Start
	lg.LogAttrs(t.Context(), slog.LevelDebug-1, "very verbose", slog.Group("req", slog.Int("id", 7)))
	lg.With("channel", "audit").Warn("moved")
	got := rec.Records()
	want := []tasktest.Record{
		{Channel: "debug", Text: "very verbose", Details: map[string]any{"req": map[string]any{"id": int64(7)}}},
		{Channel: "audit", Text: "moved"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestLifecycle(t *testing.T) {
	var calls []string
	fail := true
	tk := &hooks{
		setConfig: func(tc *task.Context, config map[string]any) error {
			calls = append(calls, "set_config")
			config["mine"] = true // a copy: the recorder's config must not change
			if fail {
				return errors.New("not yet")
			}
			return nil
		},
		message: func(tc *task.Context, msg message.Message) error {
			calls = append(calls, "message")
			if msg["panic"] == true {
				panic("handler bug")
			}
			return nil
		},
		close: func(tc *task.Context) error {
			calls = append(calls, "close")
			if tc.Context().Err() != nil {
				t.Error("the context was cancelled before Close")
			}
			return nil
		},
	}
	rec := tasktest.New("T", map[string]any{"a": 1})
	if err := rec.Message(message.Message{}); !errors.Is(err, tasktest.ErrNotStarted) {
		t.Errorf("message before Start: got %v, want ErrNotStarted", err)
	}
	if err := rec.Start(tk); err == nil || !strings.Contains(err.Error(), "set config rejected: not yet") {
		t.Errorf("start with a failing SetConfig: got %v", err)
	}
	if err := rec.Message(message.Message{}); !errors.Is(err, tasktest.ErrNotConfigured) {
		t.Errorf("message before an accepted config: got %v, want ErrNotConfigured", err)
	}
	fail = false
	if err := rec.Configure(map[string]any{"a": 1}); err != nil {
		t.Errorf("the same config again after a failure must be retried: %v", err)
	}
	if err := rec.Configure(map[string]any{"a": 1}); err != nil {
		t.Error(err)
	}
	if _, ok := rec.Config()["mine"]; ok {
		t.Error("SetConfig changed the recorder's config: it must get a copy")
	}
	if err := rec.Message(message.Message{"panic": true}); err == nil || !strings.Contains(err.Error(), "message panicked: handler bug") {
		t.Errorf("panicking handler: got %v", err)
	}
	if err := rec.Message(message.Message{}); err != nil {
		t.Errorf("the task goes on after a failed message: %v", err)
	}
	ctx := rec.TC().Context()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Error("Close did not cancel the context")
	}
	if err := rec.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := rec.Message(message.Message{}); err == nil {
		t.Error("a closed task got a message")
	}
	want := []string{"set_config", "set_config", "message", "message", "close"}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls: got %v, want %v", calls, want)
	}
}

func TestState(t *testing.T) {
	type custom struct{ X int }
	rec := start(t, "T", nil, &hooks{message: func(tc *task.Context, msg message.Message) error {
		tc.State()["n"] = 1
		tc.State()["bad"] = msg["bad"]
		return nil
	}})
	rec.TC().State()["before"] = "x"
	_ = rec.Message(message.Message{})
	got, err := rec.SavedState()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"n": int64(1), "bad": nil, "before": "x"}; !reflect.DeepEqual(got, want) {
		t.Errorf("saved state: got %v, want %v", got, want)
	}
	if rec.State()["n"] != 1 {
		t.Errorf("live state: got %T %v, want the int the task stored", rec.State()["n"], rec.State()["n"])
	}
	rec.State()["bad"] = custom{1}
	if _, err := rec.SavedState(); err == nil || !errors.Is(err, message.ErrNotJSON) {
		t.Errorf("saved state of a struct: got %v, want ErrNotJSON", err)
	}
	if err := rec.Restart(&hooks{}); err == nil {
		t.Error("Restart saved a state that is not JSON-compatible")
	}
}

// TestCallsOneAtATime calls the task from many goroutines: the task's
// unguarded counter must come out exact (run with -race).
func TestCallsOneAtATime(t *testing.T) {
	n := 0
	rec := start(t, "T", nil, &hooks{
		setConfig: func(tc *task.Context, _ map[string]any) error {
			tc.NamedRecur("tick", time.Second, func(tc *task.Context) { n++; _ = tc.Emit(message.Message{}) })
			return nil
		},
		message: func(tc *task.Context, msg message.Message) error { n++; return tc.Emit(msg) },
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_ = rec.Message(message.Message{})
				_ = rec.RunRecur("tick")
				_ = rec.Emitted()
			}
		})
	}
	wg.Wait()
	if n != 1600 || len(rec.Emitted()) != 1600 {
		t.Errorf("got %d calls and %d emits, want 1600 each", n, len(rec.Emitted()))
	}
}
