package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/exectask"
	"github.com/multimodule/multimodule/exectask/client"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// goCounter is a Go exec task: this test binary runs it when the host
// starts it as task GoCounter.
var goCounter = client.Task{
	Stateful: true,
	SetConfig: func(c *client.Conn, cfg map[string]any) error {
		if _, bad := cfg["reject"]; bad {
			return fmt.Errorf("reject is not a setting")
		}
		return nil
	},
	Message: func(c *client.Conn, msg message.Message) error {
		if msg["panic"] != nil {
			panic("asked to")
		}
		n, _ := message.Int(c.State()["ct"])
		c.State()["ct"] = n + 1
		msg["ct"] = n + 1
		msg["process"] = c.Process()
		c.Log("counted")
		return c.Emit(msg)
	},
}

func TestMain(m *testing.M) {
	if os.Getenv(exectask.EnvTask) == "GoCounter" {
		if err := client.Run(goCounter); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sink is a task.Runtime keeping what the task did.
type sink struct {
	ctx   context.Context
	emits []message.Message
	outs  []string
}

func (s *sink) Context() context.Context                         { return s.ctx }
func (s *sink) Config() map[string]any                           { return nil }
func (s *sink) Emit(m message.Message) error                     { s.emits = append(s.emits, m); return nil }
func (s *sink) Send(string, string, message.Message) error       { return nil }
func (s *sink) Recur(string, time.Duration, func(*task.Context)) {}
func (s *sink) StopRecur(string)                                 {}
func (s *sink) StopRecurs()                                      {}
func (s *sink) Out(ch, text string, _ map[string]any)            { s.outs = append(s.outs, ch+": "+text) }
func (s *sink) Logger() *slog.Logger                             { return slog.Default() }
func (s *sink) Process() string                                  { return "main" }

func TestGoTaskThroughTheAdapter(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	xt, err := exectask.Start(exectask.Spec{Name: "GoCounter", Path: exe})
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ctx: t.Context()}
	tc := task.NewContext("GoCounter", s)
	t.Cleanup(func() { _ = xt.Close(tc) })
	if !xt.HandshakeStateful() {
		t.Fatal("got HandshakeStateful() false, want true")
	}
	tc.SetState(map[string]any{"ct": int64(10)})
	if err := xt.SetConfig(tc, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		msg     message.Message
		wantErr string
		wantCt  int64
	}{
		{"counts on from the given state", message.Message{"a": "b"}, "", 11},
		{"again", message.Message{}, "", 12},
		{"a panic fails the message only", message.Message{"panic": true}, "panic: asked to", 0},
		{"and the task goes on", message.Message{}, "", 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.emits = nil
			err := xt.Message(tc, tt.msg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.emits) != 1 {
				t.Fatalf("got %d emits, want 1", len(s.emits))
			}
			if got, _ := message.Int(s.emits[0]["ct"]); got != tt.wantCt {
				t.Errorf("got ct %d, want %d", got, tt.wantCt)
			}
			if got, _ := message.Int(tc.State()["ct"]); got != tt.wantCt {
				t.Errorf("host state ct %d, want %d", got, tt.wantCt)
			}
			if s.emits[0]["process"] != "main" {
				t.Errorf("got process %v, want main (from the welcome)", s.emits[0]["process"])
			}
		})
	}
	if err := xt.SetConfig(tc, map[string]any{"reject": true}); err == nil || !strings.Contains(err.Error(), "reject is not a setting") {
		t.Errorf("bad config: got %v, want the task's refusal", err)
	}
	if len(s.outs) == 0 || s.outs[0] != "log: counted" {
		t.Errorf("got out-of-band %v, want log: counted", s.outs)
	}

	// Protocol 2: a burst announced by the host is in flight at once and
	// answered in order, each message's emit within its own Message call.
	if xt.Protocol() != 2 {
		t.Fatalf("negotiated protocol %d, want 2", xt.Protocol())
	}
	burst := make([]message.Message, 50)
	for i := range burst {
		burst[i] = message.Message{"i": int64(i)}
	}
	xt.Ahead(tc, burst)
	for i, m := range burst {
		s.emits = nil
		if err := xt.Message(tc, m); err != nil {
			t.Fatalf("burst message %d: %v", i, err)
		}
		if len(s.emits) != 1 || s.emits[0]["i"] != int64(i) {
			t.Fatalf("burst message %d: got emits %v, want its own", i, s.emits)
		}
		if got, _ := message.Int(s.emits[0]["ct"]); got != int64(14+i) {
			t.Fatalf("burst message %d: got ct %d, want %d", i, got, 14+i)
		}
	}
}
