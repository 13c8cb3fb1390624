package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// sendOnce is a task that, at the first message it handles, sends
// another to queue "to" holding what value returns (a plain Go int, a
// json.Number, …: values the send normalises into a copy).
type sendOnce struct {
	to    string
	value func() any
	mu    sync.Mutex
	got   int
}

func (s *sendOnce) Message(tc *task.Context, m message.Message) error {
	s.mu.Lock()
	s.got++
	first := s.got == 1
	s.mu.Unlock()
	if first {
		return tc.Send(s.to, message.Message{"v": s.value()})
	}
	return nil
}

func (s *sendOnce) handled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

// TestLeaseSurvivesNonCanonicalLocalSend: a task handling bus messages
// sends, at the first of them, a message holding a plain Go int (or a
// json.Number) to a task hosted in this process. The send puts a
// normalised copy in the mailbox; the lease of the bus message must go
// with it, so that the bus message, and every later one of the task, is
// acknowledged once the copy is handled.
//
// With the lease in a table keyed by the map's address, the copy was
// never found there: none of the bus messages was ever acknowledged (the
// next owner handled them all again), and an unload waited for them in
// vain.
func TestLeaseSurvivesNonCanonicalLocalSend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value func() any
	}{
		{"int", func() any { return 1 }},
		{"json.Number", func() any { return json.Number("1") }},
		{"uint8", func() any { return uint8(1) }},
	} {
		t.Run(tc.name, func(t *testing.T) { testLeaseNonCanonical(t, tc.value) })
	}
}

func testLeaseNonCanonical(t *testing.T, value func() any) {
	src := &sendOnce{to: "Dst", value: value}
	dst := &sendOnce{to: "Nowhere", value: func() any { return int64(0) }}
	dst.got = 1 // never sends
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Src", New: func() (task.Task, error) { return src, nil }})
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Dst", New: func() (task.Task, error) { return dst, nil }})
	env := mmtest.NewEnv(t)
	tr := env.Client()
	h, _ := runHost(t, host.Options{
		Transit: tr,
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
	})
	// Dst is hosted here and caught up: sends to it go into its mailbox.
	if err := h.Configure("Dst", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 30*time.Second, func() error {
		if !h.Settled("Dst") {
			return errors.New("Dst is not hosted and caught up yet")
		}
		return nil
	})
	for i := range 6 {
		env.Send("Src", message.Message{"n": i})
	}
	if err := h.Configure("Src", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 30*time.Second, func() error {
		if got := dst.handled() - 1; got != 1 {
			return fmt.Errorf("Dst handled %d messages, want 1", got)
		}
		if got := src.handled(); got != 6 {
			return fmt.Errorf("Src handled %d messages, want 6", got)
		}
		return nil
	})
	// Every bus message of Src is acknowledged (the bus drops it then).
	mmtest.Eventually(t, 20*time.Second, func() error {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		st, err := tr.Stat(sctx, "Src")
		if err != nil {
			return err
		}
		if st.Msgs != 0 {
			return fmt.Errorf("%d messages of Src still unacknowledged", st.Msgs)
		}
		return nil
	})
	if err := h.Unload(context.Background(), "Src"); err != nil {
		t.Fatal(err)
	}
	if got := src.handled(); got != 6 {
		t.Errorf("Src handled %d messages, want 6", got)
	}
}
