package host_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// stopper schedules recurring jobs every millisecond: "once" stops itself
// with the stop function NamedRecur returned, "clock" runs until a
// message stops every job (StopRecurs) and starts "after", which shows
// that time goes on.
type stopper struct {
	once, clock, after atomic.Int64
	clockAtStop        atomic.Int64
}

func (s *stopper) SetConfig(tc *task.Context, _ map[string]any) error {
	var stop func()
	stop = tc.NamedRecur("once", time.Millisecond, func(*task.Context) {
		s.once.Add(1)
		stop()
	})
	tc.NamedRecur("clock", time.Millisecond, func(*task.Context) { s.clock.Add(1) })
	return nil
}

func (s *stopper) Message(tc *task.Context, m message.Message) error {
	if message.Truthy(m["stop_all"]) {
		tc.StopRecurs()
		s.clockAtStop.Store(s.clock.Load())
		tc.NamedRecur("after", time.Millisecond, func(*task.Context) { s.after.Add(1) })
	}
	return nil
}

// TestRecurStops: in a real host, a job's stop function cancels that job
// only, and StopRecurs cancels every job of the task.
func TestRecurStops(t *testing.T) {
	s := &stopper{}
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Stopper", New: func() (task.Task, error) { return s, nil }})
	env := mmtest.NewEnv(t)
	h, _ := runHost(t, host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
	})
	if err := h.Configure("Stopper", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	// The clock runs on long after "once" had its chance to run again.
	mmtest.Eventually(t, 20*time.Second, func() error {
		if n := s.clock.Load(); n < 50 || s.once.Load() == 0 {
			return fmt.Errorf("clock ran %d times, once %d times", n, s.once.Load())
		}
		return nil
	})
	if n := s.once.Load(); n != 1 {
		t.Errorf("once ran %d times, want 1 (it stopped itself)", n)
	}
	env.Send("Stopper", message.Message{"stop_all": true})
	mmtest.Eventually(t, 20*time.Second, func() error {
		if n := s.after.Load(); n < 50 {
			return fmt.Errorf("after ran %d times", n)
		}
		return nil
	})
	if got, want := s.clock.Load(), s.clockAtStop.Load(); got != want {
		t.Errorf("clock ran %d times, %d when StopRecurs returned: it ran on", got, want)
	}
	if n := s.once.Load(); n != 1 {
		t.Errorf("once ran %d times, want 1", n)
	}
}
